"""The contract between the trainer and a text-to-image backbone.

The trainer knows nothing about SDXL, SANA or Wan. A backbone exposes its text encoders as `TextEncoderSlot`s
(the trainer adds the concept's token to each), turns images into cached latent statistics once, encodes token
ids into whatever conditioning its denoiser takes, computes the training loss for a batch, and samples images
from already-loaded components for validation. Adding a backbone = one module implementing this + one YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn


@dataclass
class TextEncoderSlot:
    """One text encoder of a backbone and everything needed to add and export a concept token for it."""

    key: str  # A1111/ComfyUI key of this encoder's rows, e.g. "clip_l"
    tokenizer: Any
    encoder: nn.Module
    diffusers_file: str  # e.g. "learned_embeds.safetensors", loadable by pipe.load_textual_inversion
    max_length: int
    # rows the tokenizer can produce; the vocabulary statistics (magnitude) are taken over these
    num_vocab_rows: int = 0

    def input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.encoder.set_input_embeddings(module)


@dataclass
class LatentCache:
    """Per-image latent statistics, computed once: the VAE is never run in the training loop.

    `std` is None when the backbone's VAE is deterministic or when sampling is disabled; otherwise each step
    draws `mean + std * noise`, as re-encoding the image every step would.
    """

    mean: torch.Tensor  # (N, C, ...) on the training device
    std: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-image conditioning, e.g. SDXL time ids

    def __len__(self) -> int:
        return self.mean.shape[0]

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mean = self.mean[index]
        if self.std is not None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + self.std[index] * noise
        return mean, {k: v[index] for k, v in self.extras.items()}


class Backbone:
    """Base class of all adapters. Subclasses set `self.encoders` and implement the methods below.

    Deliberately not an `nn.Module`: a backbone-wide `.to(dtype)` must never reach the fp32 concept table that
    the trainer attaches to the encoders' input embeddings.
    """

    name: str = "backbone"
    encoders: list[TextEncoderSlot]
    device: torch.device
    dtype: torch.dtype

    def cache_latents(self, images: list[Image.Image], resolution: int, flip: bool) -> LatentCache:
        raise NotImplementedError

    def tokenize(self, prompts: list[str]) -> list[torch.Tensor]:
        """Token ids of each prompt for each encoder (padded to the encoder's length), on `self.device`."""
        return [
            slot.tokenizer(
                prompts, padding="max_length", max_length=slot.max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
            for slot in self.encoders
        ]

    def encode_text(self, token_ids: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # objective(x0, generator) -> (noisy, timesteps, target): the backbone's diffusion objective for a batch
    objective: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    def loss(self, noisy: torch.Tensor, t: torch.Tensor, target: torch.Tensor, cond: dict[str, torch.Tensor],
             extras: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean training loss of a (micro-)batch whose noise and timesteps were drawn by `objective`."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self, prompts: list[str], seeds: list[int], resolution: int, num_inference_steps: int, guidance_scale: float
    ) -> list[Image.Image]:
        raise NotImplementedError
