"""The contract between the trainer and a text-to-image backbone.

The trainer knows nothing about SDXL, SANA or Wan. A backbone exposes its text encoders as `TextEncoderSlot`s
(the trainer adds the concept's token to each), turns images into cached latent statistics once, encodes token
ids into whatever conditioning its denoiser takes, computes the training loss for a batch, and samples images
from already-loaded components for validation. Adding a backbone = one module implementing this + one YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from dti.backbones.latents import LatentCache, build_cache, pixels_to_encode
from dti.core.errors import InputError
from dti.method.formats import add_tokens, encoder_keys_file, read_token_file
from dti.method.slots import TextEncoderSlot


class Backbone:
    """Base class of all adapters. Subclasses set `self.encoders` and implement the methods below.

    Deliberately not an `nn.Module`: a backbone-wide `.to(dtype)` must never reach the fp32 concept table that
    the trainer attaches to the encoders' input embeddings.
    """

    name: str = "backbone"
    encoders: list[TextEncoderSlot]
    device: torch.device
    dtype: torch.dtype

    denoiser_name: str = "transformer"  # the pipeline component the denoiser is (and adapters sit on)

    @property
    def denoiser(self) -> nn.Module:
        return getattr(self, self.denoiser_name)

    # image sides must be multiples of this (VAE downsampling x patch size); set by each adapter
    resolution_multiple: int = 8

    def freeze(self, denoiser: nn.Module, *others: nn.Module, compile: bool = False) -> None:
        """Frozen weights (no gradients, eval mode) on the device; optionally compile the denoiser with static
        shapes (the training and validation shapes never change within a run)."""
        for module in (denoiser, *others):
            module.requires_grad_(False).eval().to(self.device)
        if compile:
            denoiser.compile(fullgraph=False, dynamic=False)

    # pixels per latent (the VAE's downsampling): random crops move on this grid; set by each adapter
    latent_factor: int = 8

    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) in [-1, 1] -> the latent posterior's (mean, std) as the denoiser sees it (scaled,
        normalised); std None for a deterministic VAE."""
        raise NotImplementedError

    @torch.no_grad()
    def cache_latents(self, images: list[Image.Image], resolution: int, flip: bool, crop: str = "center",
                      sample: bool = True) -> LatentCache:
        """Every training image encoded once (dti.backbones.latents): its centre crop, or the whole resized image
        for random crops; `sample=False` keeps the posterior's mean only."""
        samples = pixels_to_encode(images, resolution, flip, crop, self.latent_factor)
        encoded = []
        for pixels, _, _ in samples:
            mean, std = self.encode_pixels(pixels[None].to(self.device))
            encoded.append((mean.float(), std.float() if std is not None and sample else None))
        return build_cache(encoded, samples, resolution, self.latent_factor, crop == "random", self.device)

    def tokenize(self, prompts: list[str], sampling: bool = False) -> list[torch.Tensor]:
        """Token ids of each prompt for each encoder (padded to the encoder's length), on `self.device`.

        `sampling` marks prompts for image generation, for backbones that tokenise those differently (SANA's
        optional complex human instruction)."""
        return [
            slot.tokenizer(
                [slot.preprocess(p) for p in prompts], padding="max_length", max_length=slot.max_length,
                truncation=True, return_tensors="pt",
            ).input_ids.to(self.device)
            for slot in self.encoders
        ]

    def text_augmentation(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-sample random draws for `encode_text` during training (e.g. SANA's zero-pad); none by default.
        Drawn once per step for the whole effective batch, like the rest of the step's randomness."""
        return {}

    def encode_text(self, token_ids: list[torch.Tensor], augment: dict[str, torch.Tensor] | None = None
                    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # objective(x0, generator) -> (noisy, timesteps, target): the backbone's diffusion objective for a batch
    objective: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    def loss(self, noisy: torch.Tensor, t: torch.Tensor, target: torch.Tensor, cond: dict[str, torch.Tensor],
             extras: dict[str, torch.Tensor], per_sample: bool = False) -> torch.Tensor:
        """Mean training loss of a (micro-)batch whose noise and timesteps were drawn by `objective`; with
        `per_sample`, one value per sample."""
        raise NotImplementedError

    # -- sampling with the components already in memory ------------------------------------------------------
    pipeline_class: type | None = None  # the stock diffusers pipeline of this backbone

    def embedding_metadata(self) -> dict[str, str]:
        """What a stock pipeline needs to know to condition as training did, kept in the embedding files."""
        return {}

    # the embedding files for other tools, beside the diffusers file of each encoder: writers of
    # dti.method.formats (a tuple in a class attribute: the functions stay plain functions, not methods)
    tool_files: tuple = (encoder_keys_file,)
    # the base model in the files' SAI ModelSpec metadata (kohya sd-scripts' library/sai_model_spec.py ids)
    modelspec_architecture: str = "unknown"
    modelspec_implementation: str = "diffusers"
    # (encoder key, text encoder subfolder of the checkpoint, diffusers file) per encoder, in `encoders` order:
    # what embedding files need to know of the encoders without loading them (python -m dti.convert)
    encoder_layout: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def layout(cls, encoder_key: str | None = None) -> tuple[tuple[str, str, str], ...]:
        """`encoder_layout` for these model settings (SD1.x/2.x name their one encoder by `model.encoder_key`)."""
        return cls.encoder_layout

    @classmethod
    def load_into_pipeline(cls, pipe, folder: Path, token: str | None = None) -> list[str]:
        """Add a run's saved embeddings (its `embeddings/` folder) to a stock `pipeline_class` pipeline; returns
        the concept's tokens. The default serves pipelines with one text encoder and no `load_textual_inversion`
        (SanaPipeline, WanPipeline): the tokens are added and their rows written into the encoder's table."""
        saved, rows = read_token_file(Path(folder) / "learned_embeds.safetensors")
        return add_tokens(pipe.tokenizer, pipe.text_encoder, token or saved, rows)

    def pipeline_components(self) -> dict[str, Any]:
        """Keyword arguments of `pipeline_class`: the loaded modules, never reloaded from disk. The default is
        the single-text-encoder DiT layout (SanaPipeline, WanPipeline)."""
        return dict(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                    transformer=self.transformer, scheduler=self.sample_scheduler)

    @property
    def pipeline(self):
        if getattr(self, "_pipeline", None) is None:
            self._pipeline = self.pipeline_class(**self.pipeline_components())
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def use_scheduler(self, name: str) -> None:
        """Sample with another diffusers scheduler class, built from the checkpoint's scheduler config."""
        import diffusers

        if not isinstance(getattr(diffusers, name, None), type) or not name.endswith("Scheduler"):
            raise InputError("sampler.scheduler", name, "is not a diffusers scheduler class")
        self.pipeline.scheduler = getattr(diffusers, name).from_config(self.sample_scheduler.config)

    def generators(self, seeds: list[int]) -> list[torch.Generator]:
        """One generator per image, seeded by its seed alone: an image does not depend on its batch."""
        return [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    @torch.no_grad()
    def generate(
        self, prompts: list[str], seeds: list[int], height: int, width: int, num_inference_steps: int,
        guidance_scale: float, negative_prompt: str | None = None,
    ) -> list[Image.Image]:
        """One image per (prompt, seed), each from its own generator seeded by its seed alone. `negative_prompt`
        None means the backbone's own default."""
        raise NotImplementedError


def load_scheduler_config(pretrained: str, revision: str | None = None) -> dict:
    from diffusers import DDPMScheduler  # any ConfigMixin reads a config file; the class named in it is not built

    return dict(DDPMScheduler.load_config(pretrained, subfolder="scheduler", revision=revision))


def sampling_scheduler(config: dict):
    """The checkpoint's own sampling scheduler class (named in its config), built from that config."""
    import diffusers

    return getattr(diffusers, config["_class_name"]).from_config(config)


def check_tokenizer_size(slot: TextEncoderSlot, source: str, exact: bool = False, minimum: int = 100) -> None:
    """A hub id that cannot be reached yields a tokenizer of a handful of special tokens, silently: refuse it.
    `exact`: the tokenizer must cover the embedding table exactly (CLIP); otherwise it may be smaller (UMT5)."""
    size, rows = len(slot.tokenizer), slot.encoder.config.vocab_size
    if size != rows if exact else not minimum <= size <= rows:
        raise RuntimeError(f"{source}: the {slot.key} tokenizer has {size} tokens for a {rows}-row embedding "
                           "table; its files are missing or broken")
