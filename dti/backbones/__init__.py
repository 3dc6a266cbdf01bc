"""Backbone adapters: one module per model family, each implementing `dti.backbones.base.Backbone`, and the
preprocessing and diffusion objectives they share."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from dti.backbones.base import Backbone


def adapters() -> list[type[Backbone]]:
    """Every adapter class of this package (each module is imported; a new backbone module is found as is)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    found, todo = [], list(Backbone.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def adapter_for(pipe) -> type[Backbone]:
    """The adapter class whose stock pipeline `pipe` is."""
    for adapter in adapters():
        if adapter.pipeline_class is not None and isinstance(pipe, adapter.pipeline_class):
            return adapter
    known = sorted({a.pipeline_class.__name__ for a in adapters() if a.pipeline_class is not None})
    raise TypeError(f"no embedding loader for {type(pipe).__name__} (known: {', '.join(known)})")


def load_embeddings(pipe, path: str | Path, token: str | None = None) -> list[str]:
    """Add the concept saved in a run's `embeddings/` folder (or the run folder itself) to a stock pipeline.
    Returns the concept's tokens. SDXL expands a multi-vector `<dog>` in prompts by itself; SanaPipeline and
    WanPipeline do not, so write `" ".join(tokens)` where the concept goes."""
    folder = Path(path)
    if (folder / "embeddings").is_dir():
        folder = folder / "embeddings"
    return adapter_for(pipe).load_into_pipeline(pipe, folder, token)
