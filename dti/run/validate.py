"""Every setting of a job, checked before any stage runs and before anything is loaded or written: the schema's
keys, each group's arguments (built without loading a model), the data source (without reading the photos), the
prompt sets, the evaluator's settings, the model's device and checkpoint. Each problem is one `InputError` line.

`launch.py` runs these checks on every job of a command before Hydra creates a directory (dti.run.cli); a job runs
them again when it starts, so an in-process call gets the same promise."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dti.backbones.base import is_single_file
from dti.core import checks
from dti.core.errors import InputError
from dti.core.runtime import resolve_device, resolve_dtype
from dti.evaluate.scorers import check_settings as check_evaluator_settings
from dti.method.external import check_readable
from dti.offline.random_weights import MODELS as RANDOM_MODELS
from dti.run.build import (
    _instantiate,
    build_magnitude,
    build_optimizer_factory,
    build_sampler_settings,
    check_stages,
    check_training,
    subject_names,
)

MAX_VECTORS = 74  # a concept must fit CLIP's 77-token context with BOS, EOS and at least one word

# a trigger names files and is typed into prompts: one word of file-name-safe characters
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_keys(node: DictConfig, prefix: str = "") -> None:
    """Keys the schema does not know (a typo added with `+`, e.g. `+kapa=0`), in every typed node."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key == "hydra" and not prefix:  # Hydra's own node, when the config was composed with it
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise InputError(f"{prefix}{key}", OmegaConf.select(node, str(key)), f"unknown key{hint}")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            check_keys(child, f"{prefix}{key}.")


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(name))


def check_checkpoint(field: str, name: str | None, marker: str) -> None:
    """A local folder must hold `marker`; a hub id must be in the local cache when the hub is offline."""
    if not name:
        return
    if _looks_local(name):
        if not (Path(os.path.expanduser(name)) / marker).is_file():
            raise InputError(field, name, f"is not a model folder (no {marker} there)")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, marker), str):
            raise InputError(field, name, "is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set")


def check_model(cfg: DictConfig) -> None:
    model = cfg.model
    device = resolve_device(str(model.get("device", "auto")))
    resolve_dtype(str(model.get("dtype", "auto")), device)
    if "vae_dtype" in model:
        resolve_dtype(str(model.vae_dtype), device, "model.vae_dtype")
    if "gradient_checkpointing" in model:
        checks.choice("model.gradient_checkpointing", model.gradient_checkpointing, (False, True))
    if model.get("random_init"):
        if model.name not in RANDOM_MODELS:
            raise InputError("model.random_init", True, f"random weights exist for {', '.join(RANDOM_MODELS)}")
    elif is_single_file(str(model.get("pretrained"))):
        if "single_file_config" not in model:  # the backbones that read original-layout files have that key
            raise InputError("model.pretrained", model.pretrained, "is a single-file checkpoint, which this backbone "
                             "does not read (SDXL and SD1.x/2.x do): give a diffusers folder or a hub id")
        if not Path(os.path.expanduser(str(model.pretrained))).is_file():
            raise InputError("model.pretrained", model.pretrained, "is not a file (a single-file checkpoint)")
        check_checkpoint("model.single_file_config", model.get("single_file_config"), "model_index.json")
    else:
        check_checkpoint("model.pretrained", model.get("pretrained"), "model_index.json")


def check_concept(cfg: DictConfig) -> None:
    placeholder = cfg.placeholder
    if placeholder is not None and (not str(placeholder).strip() or any(c.isspace() for c in str(placeholder))):
        raise InputError("placeholder", placeholder, "must be one word without spaces")
    trigger = cfg.get("trigger")
    if trigger is not None and not SAFE_STEM.fullmatch(str(trigger)):
        raise InputError("trigger", trigger, "must be a file name stem: letters, digits, '-', '_' or '.', "
                         "starting with a letter or digit, at most 100 characters")
    if cfg.num_vectors is not None:
        checks.integer("num_vectors", cfg.num_vectors, minimum=1, maximum=MAX_VECTORS)


def check_embedding_inputs(cfg: DictConfig, stages: list[str]) -> None:
    """`embeddings=` (score a file made elsewhere) and `concept.init_from` (train from one): the files are there,
    and the settings around them do not ask for something they cannot do. Whether the rows fit the model's
    encoders is checked once the model is loaded, before any stage runs (dti.run.build.check_embedding_files)."""
    external, init_from = cfg.get("embeddings"), cfg.concept.init_from
    if external is not None:
        if "train" in stages:
            raise InputError("embeddings", external, "is sampled and scored as it is, not trained: use "
                             "stage=[sample,evaluate], or concept.init_from to train from it")
        if init_from is not None:
            raise InputError("concept.init_from", init_from, "only applies to training; embeddings= runs none")
        if build_sampler_settings(cfg).steps != "final":
            raise InputError("sampler.steps", cfg.sampler.steps, "an external embedding has no saved steps: "
                             "use sampler.steps=final")
        check_readable("embeddings", external)
    if init_from is not None:
        if cfg.method.init != "word":
            raise InputError("concept.init_from", init_from, f"and method.init={cfg.method.init} both say where "
                             "the rows start: use one of them")
        check_readable("concept.init_from", init_from)


def check_optimizer(cfg: DictConfig) -> None:
    """The optimizer built on a stand-in parameter: its own checks of lr, kappa, betas, eps, weight decay."""
    factory = build_optimizer_factory(cfg)
    row = torch.nn.Parameter(torch.nn.functional.normalize(torch.ones(1, 2), dim=-1))
    factory([{"params": [row], "prior": row.detach().clone()}])


def check_sample_steps(settings, steps: int, every: int) -> None:
    """sampler.steps names steps whose embeddings training saves: multiples of train.checkpoint_every, or the
    last one."""
    if isinstance(settings.steps, list):
        for step in settings.steps:
            if step > steps or (step % every and step != steps):
                raise InputError("sampler.steps", step, f"is not a saved step: training saves every "
                                 f"train.checkpoint_every={every} steps and the last ({steps})")


def check_data(cfg: DictConfig) -> list[str]:
    names = subject_names(cfg)
    for name in names:
        _instantiate(cfg.data, subject=name, load=False)
    return names


def check_required(node: DictConfig, prefix: str) -> None:
    """Values a group's option leaves to the user (`???` in its file), e.g. prompts=file's path."""
    for key in node:
        if OmegaConf.is_missing(node, key):
            raise InputError(f"{prefix}.{key}", "???", f"is required here (set {prefix}.{key}=...)")


def check_prompts(cfg: DictConfig) -> None:
    check_required(cfg.prompts, "prompts")
    factory = _instantiate(cfg.prompts)
    for live in (False, True):
        factory(live=live)


def _evaluator_settings(cfg: DictConfig) -> dict:
    node = OmegaConf.to_container(cfg.evaluator, resolve=True)
    return {k: v for k, v in node.items()
            if k in ("batch_size", "device", "dtype", "dinov2", "siglip", "clip", "masks")}


def check_evaluator(cfg: DictConfig) -> None:
    """The evaluation models can be found (a local folder, or the hub cache when offline), without loading."""
    for key in ("dinov2", "siglip"):
        check_checkpoint(f"evaluator.{key}", _evaluator_settings(cfg).get(key), "config.json")


def validate_config(cfg: DictConfig) -> list[str]:
    """Every setting the job's stages will use; returns the stages, in pipeline order."""
    # the settings themselves first, then what they point at on this machine (models, files, folders)
    check_keys(cfg)
    stages = check_stages(cfg)
    checks.integer("seed", cfg.seed, minimum=0, maximum=2**63 - 1)
    checks.integer("pack", cfg.pack, minimum=1, maximum=1024)
    check_concept(cfg)
    check_embedding_inputs(cfg, stages)
    build_magnitude(cfg)
    if "train" in stages:
        check_training(cfg)
        check_optimizer(cfg)
    if {"sample", "evaluate"} & set(stages):
        check_sample_steps(build_sampler_settings(cfg), cfg.train.steps, cfg.train.checkpoint_every)
    if "evaluate" in stages:
        check_evaluator_settings(**_evaluator_settings(cfg))
    logger = _instantiate(cfg.logger).func  # a partial: nothing opened yet
    getattr(logger, "check_available", lambda: None)()  # its package is installed (when the logger says)
    if "train" in stages or "sample" in stages:
        check_model(cfg)
    if "evaluate" in stages:
        check_evaluator(cfg)
    if {"sample", "evaluate"} & set(stages):
        check_prompts(cfg)
    check_data(cfg)
    return stages
