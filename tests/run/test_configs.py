"""Every config combination composes; light parts instantiate; run directories are deterministic."""

import itertools

import pytest
from helpers import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dti.core.errors import InputError
from dti.method.magnitude import Magnitude
from dti.run.build import build_magnitude, build_optimizer_factory, check_compatible, check_scalars


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist():
    assert options("model") == ["sana_1.6b", "sana_4.8b", "sdxl", "tiny_sana", "tiny_sdxl", "tiny_wan", "wan_1.3b"]
    assert options("experiment") == ["demo", "fig16", "table2", "table3", "table6"]
    assert options("hydra/launcher") == ["gpu_pool", "packed", "slurm"]
    assert options("optimizer") == ["adamw", "adamw_proj", "rsgd"]
    assert options("magnitude") == ["float", "init", "max", "mean", "min", "none"]
    assert options("data") == ["dreambooth", "folder", "synthetic"]
    assert options("logger") == ["none", "wandb"]


def test_sweeps_default_to_the_packed_launcher_with_train_pack():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("launch", overrides=["train.pack=4"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.dti_launcher.packed_launcher.PackedLauncher"
    assert cfg.hydra.launcher.pack == 4


@pytest.mark.parametrize("model", options("model"))
def test_every_combination_composes_and_instantiates_light_parts(model):
    """Groups meet only through top-level values (kappa, data.subject, model.name, train.*), so every model is
    composed with every optimizer x magnitude and with every data x logger: all pairs of groups, 24 per model."""
    from hydra import compose, initialize_config_dir

    folder = ["data.path=/some/cat", "data.class_word=cat"]
    combos = [[f"optimizer={o}", f"magnitude={m}", "data=synthetic"]
              for o, m in itertools.product(options("optimizer"), options("magnitude"))]
    combos += [[f"data={d}", f"logger={lg}", *(folder if d == "folder" else [])]
               for d, lg in itertools.product(options("data"), options("logger"))]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in combos:
            check_light_parts(compose("launch", overrides=[f"model={model}", *overrides]), model)


def check_light_parts(cfg, model):
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
    assert demo.model.name == "tiny_sdxl" and demo.data._target_ == "dti.offline.synthetic.synthetic_subject"
    assert demo.train.resolution == 32 and demo.train.steps < 400
    ti = compose_cfg(["+method=ti"])
    assert ti.optimizer._target_ == "dti.method.optim.AdamW" and ti.magnitude._target_ == "dti.method.magnitude.Free"


def test_model_defaults_follow_the_official_launchers():
    table = {  # model: (steps, batch, accumulation, resolution, kappa, lr, validation resolution/steps/guidance)
        "sdxl": (400, 4, 1, 768, 1e-4, 0.04, 1024, 25, 5.0),
        "sana_1.6b": (500, 2, 2, 1024, 5e-5, 0.04, 1024, 20, 4.5),
        "sana_4.8b": (500, 2, 2, 1024, 5e-5, 0.04, 1024, 20, 4.5),
        "wan_1.3b": (500, 2, 2, 512, 5e-5, 0.04, [480, 832], 50, 5.0),
    }
    for model, expected in table.items():
        cfg = compose_cfg([f"model={model}"])
        t, v = cfg.train, cfg.train.validation
        got = (t.steps, t.batch_size, t.grad_accum, t.resolution, cfg.kappa, cfg.optimizer.lr,
               OmegaConf.to_container(v, resolve=True)["resolution"], v.num_inference_steps, v.guidance_scale)
        assert got == expected, model
    assert compose_cfg(["model=sana_4.8b"]).model.pretrained == "Efficient-Large-Model/SANA1.5_4.8B_1024px_diffusers"
    assert compose_cfg(["model=wan_1.3b"]).model.pretrained == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    # the command line still wins over a model's defaults
    assert compose_cfg(["model=sana_1.6b", "kappa=1e-4", "train.steps=10"]).train.steps == 10


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
    assert a == b == "outputs/kappa=0,model=tiny_sdxl/cat"
    assert c == "outputs/kappa=5e-4,model=tiny_sdxl/cat" and d == "outputs/model=tiny_sdxl/cat"
    assert run_dir(["data.subject=cat"])[0] == "outputs/default/cat"
    # sampling/evaluation settings and stages write inside the training run, so they do not name it
    assert run_dir(["model=tiny_sdxl", "data.subject=cat", "sampler.rescale=mean", "stage=[evaluate]"])[0] == d
    _, sweep = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0", "sweep_name=table3"])
    assert sweep["dir"] == "multirun/table3" and sweep["subdir"] == "kappa=0,model=tiny_sdxl/cat"
    assert run_dir(["data.subject=all"])[0] == "outputs/default/all"
    # settings that do not change the trained concept do not split a run across directories
    for harmless in ("train.log_every=5", "train.checkpoint_every=50", "train.validation.every=10",
                     "model.compile=true", "train.keep_checkpoints=3", "train.pack=4"):
        assert run_dir(["model=tiny_sdxl", "data.subject=cat", harmless])[0] == d, harmless
    assert run_dir(["data.subject=[cat,dog]"])[0] == "outputs/default/cat+dog"


GOLDEN = {  # method: (optimizer, magnitude, m* value or None, kappa used by the optimizer, lr, weight decay)
    "dti": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
    "ti": ("AdamW", "Free", None, 0.0, 0.02, 0.01),
    "t3_adamw_proj": ("ProjectedAdamW", "VocabNorm:mean", None, 1e-4, 2e-3, 0.0),
    "t3_rsgd_min": ("RiemannianSGD", "VocabNorm:min", None, 1e-4, 0.04, None),
    "t3_rsgd_float5": ("RiemannianSGD", "Fixed", 5.0, 1e-4, 0.04, None),
    "t3_rsgd_kappa0": ("RiemannianSGD", "VocabNorm:mean", None, 0.0, 0.04, None),
    "t3_rsgd_kappa5e-4": ("RiemannianSGD", "VocabNorm:mean", None, 5e-4, 0.04, None),
    "t3_rsgd_mean": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
    "fig16_init": ("RiemannianSGD", "InitializerNorm", None, 1e-4, 0.04, None),
    "fig16_mean": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
}


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_method_rows_match_the_paper_hyper_parameters(method):
    cfg = compose_cfg([f"+method={method}", "model=sdxl"])
    o, m = cfg.optimizer, cfg.magnitude
    magnitude = m._target_.rsplit(".", 1)[-1] + (f":{m.statistic}" if "statistic" in m else "")
    got = (o._target_.rsplit(".", 1)[-1], magnitude, m.get("value"), o.kappa, o.lr, o.get("weight_decay"))
    assert got == GOLDEN[method]
    assert cfg.method and (cfg.train.steps, cfg.train.batch_size, cfg.train.resolution) == (400, 4, 768)


def test_table_experiments_compose_with_their_sweeps():
    from helpers import CONF
    from hydra import compose, initialize_config_dir

    expected = {
        "table2": {"+method": "ti,dti", "model": "sdxl,sana_1.6b,sana_4.8b"},
        "table3": {"+method": "t3_adamw_proj,t3_rsgd_min,t3_rsgd_float5,t3_rsgd_kappa0,t3_rsgd_kappa5e-4,"
                              "t3_rsgd_mean"},
        "fig16": {"+method": "fig16_init,fig16_mean"},
        "table6": {"+method": "table6_recommended,dti"},
    }
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name, params in expected.items():
            cfg = compose("launch", overrides=[f"+experiment={name}"], return_hydra_config=True)
            assert OmegaConf.to_container(cfg.hydra.sweeper.params) == params
            assert cfg.sweep_name == name and cfg.data.subject == "all" and cfg.prompts._target_.endswith(
                "dreambooth_prompts")
        for launcher, target in (("gpu_pool", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                                 ("submitit_local", "LocalLauncher")):
            cfg = compose("launch", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        slurm = compose("launch", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        assert (slurm.gpus_per_node, slurm.array_parallelism, slurm.timeout_min, slurm.max_num_timeout) == \
            (1, 16, 720, 10)


def test_table6_baseline_row_keeps_the_class_word(tmp_path):
    words = tmp_path / "words.json"
    words.write_text('{"dog": "puppy"}')
    recommended = compose_cfg(["+method=table6_recommended", f"++recommended_words={words}"])
    baseline = compose_cfg(["+method=dti", f"++recommended_words={words}"])
    assert recommended.data.initializer_map == str(words) and baseline.data.initializer_map is None
