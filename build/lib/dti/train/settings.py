"""The `train:` node: how a concept is trained (dti.train.trainer) and validated during training. These dataclasses
are the config schema (unknown keys and wrong types are refused when the config is composed) and check their
ranges when they are built, before anything is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dti.core import checks
from dti.core.errors import InputError
from dti.train.templates import TEMPLATES

CROPS = ("center", "random")
RESUME_WORDS = ("auto", "never")


@dataclass
class ValidationSettings:
    enabled: bool = True
    every: int = 100  # 0: only at the end
    prompts: list[str] = field(default_factory=lambda: ["a photo of a {}"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    resolution: Any = 1024  # one size, or [height, width]
    num_inference_steps: int = 25
    guidance_scale: float = 5.0

    def __post_init__(self):
        checks.integer("train.validation.every", self.every, minimum=0)
        checks.integer("train.validation.num_inference_steps", self.num_inference_steps, minimum=1, maximum=1000)
        checks.number("train.validation.guidance_scale", self.guidance_scale, minimum=0, maximum=100)
        if not self.seeds:
            raise InputError("train.validation.seeds", list(self.seeds), "must not be empty")
        for seed in self.seeds:
            checks.integer("train.validation.seeds", seed, minimum=0)
        for prompt in self.prompts or [None]:
            if not isinstance(prompt, str) or prompt.count("{}") != 1:
                raise InputError("train.validation.prompts", prompt, 'each needs exactly one "{}" for the concept')
        size = [self.resolution] * 2 if isinstance(self.resolution, int) else list(self.resolution)
        if len(size) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 8192
                                     for x in size):
            raise InputError("train.validation.resolution", self.resolution,
                             "must be a size or [height, width], each in [1, 8192]")

    def size(self) -> tuple[int, int]:
        return (self.resolution, self.resolution) if isinstance(self.resolution, int) else tuple(self.resolution)


@dataclass
class TrainSettings:
    steps: int = 400
    batch_size: int = 4
    grad_accum: int = 1
    resolution: int = 768
    templates: str = "object"  # object | style | ti_small (dti/train/templates.py)
    crop: str = "center"  # center: one centre crop per image; random: a fresh crop per sample
    random_flip: bool = False
    sample_latents: bool = True  # draw from the VAE posterior each step (as re-encoding would); False: its mean
    log_every: int = 10
    checkpoint_every: int = 100  # also the steps whose embeddings are saved under embeddings/steps/
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto: latest checkpoint in the run directory; never; or a checkpoint path
    validation: ValidationSettings = field(default_factory=ValidationSettings)

    def __post_init__(self):
        checks.integer("train.steps", self.steps, minimum=1, maximum=10_000_000)
        checks.integer("train.batch_size", self.batch_size, minimum=1, maximum=4096)
        checks.integer("train.grad_accum", self.grad_accum, minimum=1, maximum=4096)
        checks.integer("train.resolution", self.resolution, minimum=8, maximum=8192)
        checks.integer("train.log_every", self.log_every, minimum=1)
        checks.integer("train.checkpoint_every", self.checkpoint_every, minimum=1)
        checks.integer("train.keep_checkpoints", self.keep_checkpoints, minimum=1)
        checks.choice("train.templates", self.templates, sorted(TEMPLATES))
        checks.choice("train.crop", self.crop, CROPS)
        if not isinstance(self.resume, str) or not self.resume.strip():
            raise InputError("train.resume", self.resume, "is auto, never or a checkpoint file")
        if isinstance(self.validation, dict):
            self.validation = ValidationSettings(**self.validation)
