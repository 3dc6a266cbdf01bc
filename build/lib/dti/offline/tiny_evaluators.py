"""Tiny random-weight DINOv2 and SigLIP (`evaluator=tiny`), built in code, saved with `save_pretrained` and loaded
back through the same `from_pretrained` path as the real ones. Their scores are meaningless; the path is real."""

from __future__ import annotations

from pathlib import Path

import torch

from dti.evaluate.scorers import Evaluator
from dti.offline.cache import build_once
from dti.offline.tokenizers import t5_style_tokenizer


def build_tiny_dinov2(folder: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)


def build_tiny_siglip(folder: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    tokenizer = t5_style_tokenizer()
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load_tiny_evaluator(cache_dir: str | None = None, **kwargs) -> Evaluator:
    """`evaluator=tiny`: random-weight DINOv2 and SigLIP, through the same `from_pretrained` path as the real ones."""
    dinov2 = build_once("tiny_dinov2", build_tiny_dinov2, cache_dir, marker="config.json")
    siglip = build_once("tiny_siglip", build_tiny_siglip, cache_dir, marker="config.json")
    return Evaluator(dinov2=str(dinov2), siglip=str(siglip), **kwargs)
