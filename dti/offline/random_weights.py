"""Published architecture configs (dti/offline/archs/*.json) and random-weight checkpoints built from them, for
benchmarks at real scale without hub access (`python -m dti.tools.bench ... model.random_init=true`).

The configs are the component configs of the published diffusers checkpoints (facts, not weights). A random
checkpoint is built once, on the GPU when there is one, saved (bf16 except the VAE) into the cache and then
loaded through the ordinary adapter like any local checkpoint. The real CLIP tokenizer is built offline; Gemma's
and UMT5's are not available offline, so SANA and Wan get synthetic tokenizers of the real length (only token
ids reach the model). Random weights produce meaningless images: timing only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dti.backbones.base import sampling_scheduler
from dti.core.errors import InputError
from dti.offline.cache import build_once
from dti.offline.clip_tokenizer import build_clip_tokenizer
from dti.offline.tokenizers import gemma_style_tokenizer, t5_style_tokenizer

ARCHS = Path(__file__).resolve().parent / "archs"


def load_config(file: str, overrides: dict | None = None) -> dict:
    return {**json.loads((ARCHS / f"{file}.json").read_text()), **(overrides or {})}


def _clip_tokenizers(modules: dict) -> dict:

    return {"tokenizer": build_clip_tokenizer(), "tokenizer_2": build_clip_tokenizer(pad_token="!")}


def _clip_l_tokenizer(modules: dict) -> dict:
    return {"tokenizer": build_clip_tokenizer()}


def _open_clip_h_tokenizer(modules: dict) -> dict:
    return {"tokenizer": build_clip_tokenizer(pad_token="!")}  # SD2.x pads with "!" (OpenCLIP pads with id 0)


def _gemma_tokenizer(modules: dict) -> dict:

    return {"tokenizer": gemma_style_tokenizer(size=modules["text_encoder"].config.vocab_size)}


def _umt5_tokenizer(modules: dict) -> dict:

    # UMT5's table has 384 rows beyond its 256 000 SentencePiece pieces (sentinel ids, never in a prompt); the
    # adapter takes m* over the rows the tokenizer can produce
    return {"tokenizer": t5_style_tokenizer(size=modules["text_encoder"].config.vocab_size - 384)}


@dataclass(frozen=True)
class RandomModel:
    pipeline: str  # the diffusers pipeline class whose folder layout is written
    # pipeline argument -> (library, model class, config class for transformers models or None, config file)
    modules: dict[str, tuple[str, str, str | None, str]]
    scheduler: str  # config file of the sampling scheduler
    tokenizers: Callable[[dict], dict]  # the built modules -> the pipeline's tokenizer arguments
    extra: dict = field(default_factory=dict)  # other pipeline arguments (components left out)


def _sana(transformer: str) -> RandomModel:
    return RandomModel("SanaPipeline", {
        "transformer": ("diffusers", "SanaTransformer2DModel", None, f"{transformer}.transformer"),
        "vae": ("diffusers", "AutoencoderDC", None, "sana1.5_1.6b.vae"),
        "text_encoder": ("transformers", "Gemma2Model", "Gemma2Config", "sana1.5_1.6b.text_encoder"),
    }, "sana1.5_1.6b.scheduler", _gemma_tokenizer)


def _sd(prefix: str, tokenizers: Callable[[dict], dict]) -> RandomModel:
    return RandomModel("StableDiffusionPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel", None, f"{prefix}.unet"),
        "vae": ("diffusers", "AutoencoderKL", None, f"{prefix}.vae"),
        "text_encoder": ("transformers", "CLIPTextModel", "CLIPTextConfig", f"{prefix}.text_encoder"),
    }, f"{prefix}.scheduler", tokenizers,
        {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False})


MODELS = {
    "sdxl": RandomModel("StableDiffusionXLPipeline", {
        "unet": ("diffusers", "UNet2DConditionModel", None, "sdxl_base.unet"),
        "vae": ("diffusers", "AutoencoderKL", None, "sdxl_base.vae"),
        "text_encoder": ("transformers", "CLIPTextModel", "CLIPTextConfig", "sdxl_base.text_encoder"),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", "CLIPTextConfig",
                           "sdxl_base.text_encoder_2"),
    }, "sdxl_base.scheduler", _clip_tokenizers),
    "sana_1.6b": _sana("sana1.5_1.6b"),
    "sana_4.8b": _sana("sana1.5_4.8b"),
    "wan_1.3b": RandomModel("WanPipeline", {
        "transformer": ("diffusers", "WanTransformer3DModel", None, "wan2.1_t2v_1.3b.transformer"),
        "vae": ("diffusers", "AutoencoderKLWan", None, "wan2.1_t2v_1.3b.vae"),
        "text_encoder": ("transformers", "UMT5EncoderModel", "UMT5Config", "wan2.1_t2v_1.3b.text_encoder"),
    }, "wan2.1_t2v_1.3b.scheduler", _umt5_tokenizer),
    "sd15": _sd("sd1.5", _clip_l_tokenizer),
    "sd21_base": _sd("sd2.1_base", _open_clip_h_tokenizer),
}


def build_modules(model: str, overrides: dict | None = None, device: str | torch.device = "cpu") -> dict:
    """The model's networks with random weights, built on `device` ("meta": shapes only, no memory).
    `overrides`: {argument: {config key: value}}, e.g. to shrink a network for a test."""
    import diffusers
    import transformers

    modules = {}
    with torch.device(device):
        for name, (library, cls, config_cls, file) in MODELS[model].modules.items():
            config = load_config(file, (overrides or {}).get(name))
            if library == "diffusers":
                modules[name] = getattr(diffusers, cls).from_config(config)
            else:
                modules[name] = getattr(transformers, cls)(getattr(transformers, config_cls).from_dict(config))
    return modules


def build_random(model: str, folder: Path, overrides: dict | None = None) -> None:
    """Write a diffusers checkpoint folder of `model` with random weights (built on the GPU when there is one)."""
    import diffusers


    spec = MODELS[model]
    torch.manual_seed(0)
    modules = build_modules(model, overrides, "cuda" if torch.cuda.is_available() else "cpu")
    for name, module in modules.items():
        if name != "vae":  # the adapters choose the VAE's precision (model.vae_dtype); the rest runs in bf16
            module.to(torch.bfloat16)
    scheduler = sampling_scheduler(load_config(spec.scheduler))
    getattr(diffusers, spec.pipeline)(**modules, **spec.tokenizers(modules), scheduler=scheduler,
                                      **spec.extra).save_pretrained(folder)


def random_pretrained(model: str, cache_dir: str | None = None) -> Path:
    """A local checkpoint folder with the real architecture of `model` and random weights (built once)."""
    if model not in MODELS:
        raise InputError("model.random_init", model, f"random weights are available for {', '.join(MODELS)}")
    return build_once(f"random_{model}", lambda folder: build_random(model, folder), cache_dir)
