"""Published architecture configs (dti/archs/*.json) and random-weight checkpoints built from them, for
benchmarks at real scale without hub access (`python -m dti.bench ... model.random_init=true`).

The configs are the component configs of the published diffusers checkpoints (facts, not weights). A random
checkpoint is built once, on the GPU when there is one, saved in bf16 into the cache and then loaded through
the ordinary adapter like any local checkpoint. Random weights produce meaningless images: timing only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dti.errors import InputError

ARCHS = Path(__file__).resolve().parent


def _config(prefix: str, part: str) -> dict:
    return json.loads((ARCHS / f"{prefix}.{part}.json").read_text())


def build_random_sdxl(folder: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dti.clip_tokenizer import build_clip_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(_config("sdxl_base", "unet"))
        vae = AutoencoderKL.from_config(_config("sdxl_base", "vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_dict(_config("sdxl_base", "text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(_config("sdxl_base", "text_encoder_2")))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1.to(torch.bfloat16), text_encoder_2=te2.to(torch.bfloat16),
        tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(pad_token="!"),
        unet=unet.to(torch.bfloat16), scheduler=EulerDiscreteScheduler.from_config(_config("sdxl_base", "scheduler")),
    )
    pipe.save_pretrained(folder)


BUILDERS = {"sdxl": build_random_sdxl}


def random_pretrained(model: str, cache_dir: str | None = None) -> Path:
    """A local checkpoint folder with the real architecture of `model` and random weights (built once)."""
    from dti.backbones.tiny import build_once

    if model not in BUILDERS:
        raise InputError("model.random_init", model, f"random weights are available for {', '.join(BUILDERS)} "
                         "(SANA and Wan need synthetic 256k-token tokenizers: pending)")
    return build_once(f"random_{model}", BUILDERS[model], cache_dir)
