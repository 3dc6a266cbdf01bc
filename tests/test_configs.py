"""Every config combination composes; light parts instantiate; run directories are deterministic."""

import itertools

import pytest
from conftest import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dti.build import build_magnitude, build_optimizer_factory, check_compatible, check_scalars
from dti.errors import InputError
from dti.magnitude import Magnitude


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist():
    assert options("model") == ["sdxl", "tiny_sdxl"]
    assert options("optimizer") == ["adamw", "adamw_proj", "rsgd"]
    assert options("magnitude") == ["float", "init", "max", "mean", "min", "none"]
    assert options("data") == ["dreambooth", "folder", "synthetic"]
    assert options("logger") == ["none", "wandb"]
    assert "demo" in options("experiment")


@pytest.mark.parametrize("model,data,logger", itertools.product(options("model"), options("data"), options("logger")))
def test_every_combination_composes_and_instantiates_light_parts(model, data, logger):
    for optimizer, magnitude in itertools.product(options("optimizer"), options("magnitude")):
        overrides = [f"model={model}", f"data={data}", f"logger={logger}", f"optimizer={optimizer}",
                     f"magnitude={magnitude}"]
        if data == "folder":
            overrides += ["data.path=/some/cat", "data.class_word=cat"]
        cfg = compose_cfg(overrides)
        assert cfg.model.name == model and cfg.model._target_
        check_scalars(cfg)
        mag = build_magnitude(cfg)
        assert isinstance(mag, Magnitude)
        factory = build_optimizer_factory(cfg)
        assert callable(factory) and hasattr(factory.func, "keeps_unit_rows")
        if factory.func.keeps_unit_rows == mag.fixed:
            check_compatible(mag, factory)
        else:  # e.g. rsgd with magnitude=none: refused with a one-line reason
            with pytest.raises(InputError):
                check_compatible(mag, factory)
        assert callable(instantiate(cfg.logger))
        OmegaConf.to_container(cfg.train, resolve=True)


def test_experiments_compose():
    demo = compose_cfg(["+experiment=demo"])
    assert demo.model.name == "tiny_sdxl" and demo.data._target_ == "dti.demo.synthetic_subject"
    assert demo.train.resolution == 32 and demo.train.steps < 400
    ti = compose_cfg(["+experiment=ti"])
    assert ti.optimizer._target_ == "dti.optim.AdamW" and ti.magnitude._target_ == "dti.magnitude.Free"


def test_official_defaults():
    cfg = compose_cfg([])
    assert (cfg.optimizer.lr, cfg.train.steps, cfg.train.batch_size, cfg.train.resolution, cfg.seed) == \
        (0.04, 400, 4, 768, 42)
    assert cfg.model.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cfg.optimizer.kappa == cfg.kappa == 1e-4
    assert compose_cfg(["kappa=5e-4"]).optimizer.kappa == 5e-4


def run_dir(overrides):
    cfg = compose_cfg_hydra(overrides)
    return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"], \
        OmegaConf.to_container(cfg.hydra.sweep, resolve=True)


def compose_cfg_hydra(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("launch", overrides=overrides, return_hydra_config=True)


def test_run_directories_are_deterministic_and_distinct():
    a, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0"])
    b, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0"])
    c, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=5e-4"])
    d, _ = run_dir(["model=tiny_sdxl", "data.subject=cat"])
    assert a == b == "outputs/tiny_sdxl/cat/kappa=0"
    assert c == "outputs/tiny_sdxl/cat/kappa=5e-4" and d == "outputs/tiny_sdxl/cat/default"
    _, sweep = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0", "sweep_name=table3"])
    assert sweep["dir"] == "multirun/table3" and sweep["subdir"] == "kappa=0/cat"
