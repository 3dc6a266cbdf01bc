"""The config tree: every option composes, recipes and methods give the official settings, kappa has one home,
run directories are deterministic, and every key is classified for the run's identity."""

import functools
import itertools

import pytest
from helpers import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dti.core.errors import InputError
from dti.run.build import build_magnitude, build_optimizer_factory, check_compatible, check_scalars
from dti.run.identity import CONCEPT_KEYS, OTHER_KEYS, _matches, flatten


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


REAL_MODELS = ["sdxl", "sana_1.6b", "sana_4.8b", "wan_1.3b", "sd15", "sd21_base"]

# which optimizer takes which magnitude: written out, not derived from the classes' own attributes
COMPATIBLE = {
    "rsgd": {"mean", "min", "max", "float", "init"}, "adamw_proj": {"mean", "min", "max", "float", "init"},
    "adamw": {"none"},
}


@functools.cache
def composed(*overrides):
    return compose_cfg(list(overrides))


def test_every_optimizer_and_magnitude_pair_composes_or_is_refused_in_one_line():
    for o, m in itertools.product(options("optimizer"), options("magnitude")):
        cfg = composed("model=tiny_sdxl", f"optimizer={o}", f"magnitude={m}")
        check_scalars(cfg)
        if m in COMPATIBLE[o]:
            check_compatible(build_magnitude(cfg), build_optimizer_factory(cfg))
        else:  # e.g. rsgd with magnitude=none: refused with a one-line reason
            with pytest.raises(InputError):
                check_compatible(build_magnitude(cfg), build_optimizer_factory(cfg))


@pytest.mark.parametrize("model", options("model"))
def test_every_method_on_every_model_composes_and_instantiates_light_parts(model):
    for method in options("method"):
        cfg = composed(f"model={model}", f"method={method}")
        assert cfg.model.name == model and cfg.method.name == method and cfg.model._target_
        check_scalars(cfg)
        check_compatible(build_magnitude(cfg), build_optimizer_factory(cfg))  # every method is a valid pair


def test_every_data_source_and_logger_composes_and_instantiates():
    # neither group's files refer to the model, so one model covers them
    folder = ["data.path=/some/cat", "data.class_word=cat"]
    for d, lg in itertools.product(options("data"), options("logger")):
        cfg = composed("model=tiny_sdxl", f"data={d}", f"logger={lg}", *(folder if d == "folder" else []))
        assert cfg.data and callable(instantiate(cfg.logger))


def test_every_model_has_an_official_and_a_paper_recipe():
    for model in options("model"):
        for recipe in options("recipe"):
            assert (CONF / "recipes" / recipe / f"{model}.yaml").is_file(), (model, recipe)


def test_every_method_names_itself_and_has_a_label():
    for method in options("method"):
        cfg = compose_cfg([f"method={method}"])
        assert cfg.method.name == method and cfg.method.label


def test_sweeps_default_to_the_packed_launcher_with_pack():
    cfg = compose_cfg(["pack=4"], hydra=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.dti_launcher.packed_launcher.PackedLauncher"
    assert cfg.hydra.launcher.pack == 4


def test_the_demo_and_ti_compose():
    demo = compose_cfg(["+experiment=demo"])
    assert demo.model.name == "tiny_sdxl" and demo.data._target_ == "dti.offline.synthetic.synthetic_subject"
    assert demo.train.resolution == 32 and demo.train.steps == 60
    ti = compose_cfg(["method=ti"])
    assert ti.optimizer._target_ == "dti.method.optim.AdamW" and ti.magnitude._target_ == "dti.method.magnitude.Free"


# The official launch scripts, one row per method x backbone (shared/paper official_settings.md):
# words, resolution, batch, accumulation, steps, optimizer, lr, weight decay, kappa, magnitude, zero-pad scale
OFFICIAL = {
    ("dti", "sdxl"): ("class_word", 768, 4, 1, 400, "RiemannianSGD", 0.04, None, 1e-4, "mean", None),
    ("ti", "sdxl"): ("class_word", 768, 4, 1, 400, "AdamW", 0.02, 0.01, 0.0, "none", None),
    ("dti", "sana_1.6b"): ("initialization", 1024, 2, 2, 500, "RiemannianSGD", 0.04, None, 5e-5, "mean", 2.0),
    ("dti", "sana_4.8b"): ("initialization", 1024, 2, 2, 500, "RiemannianSGD", 0.04, None, 5e-5, "mean", 2.0),
    ("ti", "sana_1.6b"): ("class_word", 1024, 2, 2, 500, "AdamW", 0.02, 0.0, 0.0, "none", 0.0),
    ("ti", "sana_4.8b"): ("class_word", 1024, 2, 2, 500, "AdamW", 0.02, 0.0, 0.0, "none", 0.0),
    ("dti", "wan_1.3b"): ("initialization", 512, 2, 2, 500, "RiemannianSGD", 0.04, None, 5e-5, "mean", None),
    # no official script for SD1.5 / 2.1-base: the SDXL scripts' settings at 512 px (recipes/official/sd15.yaml)
    ("dti", "sd15"): ("class_word", 512, 4, 1, 400, "RiemannianSGD", 0.04, None, 1e-4, "mean", None),
    ("dti", "sd21_base"): ("class_word", 512, 4, 1, 400, "RiemannianSGD", 0.04, None, 1e-4, "mean", None),
    ("ti", "sd15"): ("class_word", 512, 4, 1, 400, "AdamW", 0.02, 0.01, 0.0, "none", None),
    ("ti", "sd21_base"): ("class_word", 512, 4, 1, 400, "AdamW", 0.02, 0.01, 0.0, "none", None),
}


def official_row(cfg):
    m = cfg.magnitude
    magnitude = m.get("statistic") or m._target_.rsplit(".", 1)[-1].replace("Free", "none")
    t = cfg.train
    return (cfg.data.words, t.resolution, t.batch_size, t.grad_accum, t.steps,
            cfg.optimizer._target_.rsplit(".", 1)[-1], cfg.optimizer.lr, cfg.optimizer.get("weight_decay"),
            cfg.optimizer.kappa, magnitude, cfg.model.get("zero_pad_scale"))


@pytest.mark.parametrize("method,model", sorted(OFFICIAL))
def test_composed_settings_equal_the_official_scripts(method, model):
    cfg = compose_cfg([f"method={method}", f"model={model}"])
    assert official_row(cfg) == OFFICIAL[(method, model)]
    assert cfg.train.templates == "ti_small" and cfg.train.checkpoint_every == 50


def test_official_sampling_settings():
    expected = {  # model: (height, width, steps, guidance, scheduler, instruction, instruction stages)
        "sdxl": (1024, 1024, 50, 5.0, None), "sana_1.6b": (1024, 1024, 20, 4.5, None),
        "wan_1.3b": (480, 832, 50, 5.0, None),
        "sd15": (512, 512, 50, 7.5, None), "sd21_base": (512, 512, 50, 7.5, None),  # StableDiffusionPipeline's
    }
    for model, values in expected.items():
        s = compose_cfg([f"model={model}"]).sampler
        assert (s.height, s.width, s.num_inference_steps, s.guidance_scale, s.scheduler) == values, model
    sana = compose_cfg(["model=sana_1.6b"]).model
    assert sana.complex_human_instruction == "default" and list(sana.instruction_stages) == ["sample"]


# recipe=paper: exactly these values change (the paper's text, shared/paper official_settings.md)
PAPER_CHANGES = {
    "sdxl": {"optimizer.lr": 5e-3, "train.steps": 500, "sampler.scheduler": "DDIMScheduler"},
    "sana_1.6b": {"optimizer.lr": 0.02, "train.steps": 1000, "kappa": 1e-4, "optimizer.kappa": 1e-4,
                  "model.complex_human_instruction": None},
    "sana_4.8b": {"optimizer.lr": 0.02, "train.steps": 1000, "kappa": 1e-4, "optimizer.kappa": 1e-4,
                  "model.complex_human_instruction": None},
    "wan_1.3b": {"optimizer.lr": 5e-3, "kappa": 1e-4, "optimizer.kappa": 1e-4},
    # the paper names a sampler (DDIM) for SDXL only: SD keeps its checkpoint's PNDM
    "sd15": {"optimizer.lr": 5e-3, "train.steps": 500},
    "sd21_base": {"optimizer.lr": 5e-3, "train.steps": 500},
}


@pytest.mark.parametrize("model", REAL_MODELS)
def test_recipe_paper_changes_exactly_the_listed_values(model):
    official = flatten(OmegaConf.to_container(compose_cfg([f"model={model}"]), resolve=True))
    paper = flatten(OmegaConf.to_container(compose_cfg([f"model={model}", "recipe=paper"]), resolve=True))
    changed = {k: paper[k] for k in paper if paper[k] != official.get(k)}
    assert changed == {"recipe": "paper", **PAPER_CHANGES[model]}


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_kappa_has_one_home_and_reaches_every_optimizer(optimizer):
    assert compose_cfg([f"optimizer={optimizer}", "kappa=5e-4"]).optimizer.kappa == 5e-4
    with pytest.raises(InputError, match=r"^kappa=-0.001: "):  # checked as the optimizer gets it
        check_scalars(compose_cfg([f"optimizer={optimizer}", "kappa=-1e-3"]))
    # a method that sets kappa (TI: 0) still yields to the command line
    assert compose_cfg(["method=ti", "kappa=5e-4"]).optimizer.kappa == 5e-4
    assert compose_cfg(["method=ti"]).optimizer.kappa == 0.0


def run_dir(overrides):
    cfg = compose_cfg(overrides, hydra=True)
    return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"], \
        OmegaConf.to_container(cfg.hydra.sweep, resolve=True)


def test_run_directories_are_deterministic_and_distinct():
    a, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0"])
    b, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0"])
    c, _ = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=5e-4"])
    d, _ = run_dir(["model=tiny_sdxl", "data.subject=cat"])
    assert a == b == "outputs/kappa=0,model=tiny_sdxl/cat"
    assert c == "outputs/kappa=5e-4,model=tiny_sdxl/cat" and d == "outputs/model=tiny_sdxl/cat"
    assert run_dir(["data.subject=cat"])[0] == "outputs/default/cat"
    assert run_dir(["data.subject=cat", "recipe=paper", "method=ti"])[0] == "outputs/method=ti,recipe=paper/cat"
    # sampling/evaluation settings and stages write inside the training run, so they do not name it
    assert run_dir(["model=tiny_sdxl", "data.subject=cat", "sampler.rescale=mean", "stage=[evaluate]"])[0] == d
    _, sweep = run_dir(["model=tiny_sdxl", "data.subject=cat", "kappa=0", "sweep_name=table3"])
    assert sweep["dir"] == "multirun/table3" and sweep["subdir"] == "kappa=0,model=tiny_sdxl/cat"
    assert run_dir(["data.subject=all"])[0] == "outputs/default/all"
    # settings that do not change the trained concept do not split a run across directories; paths stay out too
    for harmless in ("train.log_every=5", "train.checkpoint_every=50", "train.validation.every=10",
                     "model.compile=true", "train.keep_checkpoints=3", "pack=4", "evaluator.batch_size=4",
                     "logger=wandb"):
        assert run_dir(["model=tiny_sdxl", "data.subject=cat", harmless])[0] == d, harmless
    assert run_dir(["model=sdxl", "model.pretrained=/ckpt/sdxl"])[0] == "outputs/model=sdxl/dog"
    assert run_dir(["data.subject=[cat,dog]"])[0] == "outputs/default/cat+dog"


def all_keys():
    keys = set()
    # a model's keys and a method's keys come from their own files, so each model with the default method and each
    # method with the default model cover them, plus the pairs a method recipe (conf/method_recipes) sets apart
    pairs = [(model, "dti") for model in options("model")] + [("sdxl", method) for method in options("method")]
    pairs += [(recipe.stem, recipe.parent.name) for recipe in (CONF / "method_recipes").glob("*/*.yaml")]
    for model, method in pairs:
        keys |= set(flatten(OmegaConf.to_container(composed(f"model={model}", f"method={method}"))))
    for group in ("data", "optimizer", "magnitude", "logger", "prompts", "evaluator", "recipe", "adapter", "sampler"):
        for option in options(group):
            extra = ["prompts.path=x"] if (group, option) == ("prompts", "file") else []
            keys |= set(flatten(OmegaConf.to_container(composed(f"{group}={option}", *extra))))
    return keys


def test_every_config_key_is_classified_once_for_the_run_identity():
    for key in sorted(all_keys()):
        inside = _matches(key, CONCEPT_KEYS), _matches(key, OTHER_KEYS)
        assert sum(inside) == 1, (key, inside)


GOLDEN = {  # method: (optimizer, magnitude, m* value or None, kappa used by the optimizer, lr, weight decay)
    "dti": ("RiemannianSGD", "VocabNorm:mean", None, 1e-4, 0.04, None),
    "ti": ("AdamW", "Free", None, 0.0, 0.02, 0.01),
    "t3_adamw_proj": ("ProjectedAdamW", "VocabNorm:mean", None, 1e-4, 0.015, 0.0),
    "t3_rsgd_min": ("RiemannianSGD", "VocabNorm:min", None, 1e-4, 0.04, None),
    "t3_rsgd_float5": ("RiemannianSGD", "FixedValue", 5.0, 1e-4, 0.04, None),
    "t3_rsgd_kappa0": ("RiemannianSGD", "VocabNorm:mean", None, 0.0, 0.04, None),
    "t3_rsgd_kappa5e-4": ("RiemannianSGD", "VocabNorm:mean", None, 5e-4, 0.04, None),
    "fig16_init": ("RiemannianSGD", "InitializerNorm", None, 1e-4, 0.04, None),
}


# the models the method rows run on (Tables 2, 3, 7): steps, batch, resolution of their official recipes
GOLDEN_MODELS = {"sdxl": (400, 4, 768), "sd15": (400, 4, 512), "sd21_base": (400, 4, 512)}


@pytest.mark.parametrize("model", sorted(GOLDEN_MODELS))
@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_method_rows_match_the_paper_hyper_parameters(method, model):
    cfg = composed(f"method={method}", f"model={model}")
    o, m = cfg.optimizer, cfg.magnitude
    magnitude = m._target_.rsplit(".", 1)[-1] + (f":{m.statistic}" if "statistic" in m else "")
    got = (o._target_.rsplit(".", 1)[-1], magnitude, m.get("value"), o.kappa, o.lr, o.get("weight_decay"))
    assert got == GOLDEN[method]
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.resolution) == GOLDEN_MODELS[model]


def test_table_experiments_compose_with_their_sweeps():
    expected = {
        "table2": {"method": "ti,dti,crossinit", "model": "sdxl,sana_1.6b,sana_4.8b"},
        "table3": {"method": "t3_adamw_proj,t3_rsgd_min,t3_rsgd_float5,t3_rsgd_kappa0,t3_rsgd_kappa5e-4,dti"},
        "fig16": {"method": "fig16_init,dti"},
        "table6": {"method": "ti,dti", "model": "sdxl,sana_1.6b", "+words": "dreambooth,qwen_vl"},
        "table8": {"method": "dco_ti,dco_dti"},
        "fig11": {"method": "lora_ti,lora_dti"},
        "oft": {"method": "oft,oft_ti,oft_dti"},
        "table7": {"method": "ti,dti", "model": "sd15,sd21_base"},
    }
    for name, params in expected.items():
        cfg = compose_cfg([f"+experiment={name}"], hydra=True)
        assert OmegaConf.to_container(cfg.hydra.sweeper.params) == params
        assert cfg.sweep_name == name and cfg.data.subject == "all" and cfg.prompts._target_.endswith(
            "dreambooth_prompts")
    for launcher, target in (("gpu_pool", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                             ("submitit_local", "LocalLauncher")):
        cfg = compose_cfg([f"hydra/launcher={launcher}"], hydra=True)
        assert cfg.hydra.launcher._target_.endswith(target)
    slurm = compose_cfg(["hydra/launcher=slurm"], hydra=True).hydra.launcher
    assert (slurm.gpus_per_node, slurm.array_parallelism, slurm.timeout_min, slurm.max_num_timeout) == \
        (1, 16, 720, 10)


def test_qwen_vl_words_for_every_dreambooth_subject():
    from dti.train.data import initializer_word

    table = compose_cfg([]).data.subjects
    words = {name: initializer_word(name, dict(entry), "qwen_vl", None) for name, entry in table.items()}
    assert len(words) == 30 and words["dog"] == "corgi" and words["wolf_plushie"] == "stuffed dog"
    assert compose_cfg(["+words=qwen_vl"]).data.words == "qwen_vl"
    assert compose_cfg(["+words=dreambooth", "model=sana_1.6b"]).data.words == "initialization"  # the recipe's
    assert table["pink_sunglasses"].class_word == "sunglasses"  # as the official code's subject table


def test_the_command_line_wins_over_an_experiments_sweep_of_the_same_key():
    """As Hydra's basic sweeper does: the experiment sweeps model=sd15,sd21_base and method=ti,dti; model=tiny_sd15
    on the command line replaces the model sweep (so the hub models are never checked), method=dti,ti replaces the
    method sweep in its own order."""
    from dti.run.precheck import jobs

    runs = jobs(["+experiment=table7", "model=tiny_sd15", "method=dti,ti"], multirun=True)
    assert sorted(tuple(sorted(job)) for job in runs) == [
        ("+experiment=table7", "method=dti", "model=tiny_sd15"), ("+experiment=table7", "method=ti", "model=tiny_sd15")]
