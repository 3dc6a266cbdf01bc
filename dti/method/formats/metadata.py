"""The metadata every embedding file carries (safetensors metadata; the `.pt`'s "dti" dict): diffusers' `format`
convention, the SAI ModelSpec fields as kohya's sd-scripts writes them (library/sai_model_spec.py: version, the
base model's architecture id + "/textual-inversion", implementation, title, date, trigger phrase, resolution), and
dti's own (`dti.*`). All values are strings; numbers and lists are JSON."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import torch

MODELSPEC_VERSION = "1.0.0"
TEXTUAL_INVERSION = "textual-inversion"  # kohya's adapter suffix of the architecture id


@dataclass(frozen=True)
class RunFacts:
    """What the files say about the run that made them, fixed for the run (the step and rows change)."""

    method: str  # the method's name, e.g. dti
    trigger: str  # the tool files' name, the word A1111 / ComfyUI prompts use
    kappa: float
    steps: int
    base_model: str  # the checkpoint trained on (hub id or folder)
    resolution: int | list[int]  # train.resolution: one side, or [height, width]
    version: str  # dti's


def _resolution(value: int | list[int]) -> str:
    height, width = (value, value) if isinstance(value, int) else value
    return f"{width}x{height}"


def embedding_metadata(facts: RunFacts, architecture: str, implementation: str, placeholder: str,
                       initializer: str, step: int, magnitudes: dict[str, torch.Tensor | None],
                       backbone: dict[str, str]) -> dict[str, str]:
    """The metadata of one save. `magnitudes`: m* per encoder and row (None where the norm is free, plain TI);
    `backbone`: what a stock pipeline needs to condition as training did (Backbone.embedding_metadata)."""
    return {
        "format": "pt",
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{architecture}/{TEXTUAL_INVERSION}",
        "modelspec.implementation": implementation,
        "modelspec.title": f"{facts.trigger} ({facts.method})",
        "modelspec.date": datetime.date.today().isoformat(),
        "modelspec.trigger_phrase": facts.trigger,
        "modelspec.resolution": _resolution(facts.resolution),
        "dti.method": facts.method,
        "dti.magnitude": json.dumps({k: None if m is None else [float(x) for x in m.flatten()]
                                     for k, m in magnitudes.items()}),
        "dti.kappa": json.dumps(float(facts.kappa)),
        "dti.step": str(int(step)),
        "dti.steps": str(int(facts.steps)),
        "dti.base_model": facts.base_model,
        "dti.placeholder": placeholder,
        "dti.initializer": initializer,
        "dti.version": facts.version,
        **backbone,
    }
