"""Saving the learned embeddings in the formats other tools read, and loading them into stock pipelines.

Per encoder: `embeddings/<diffusers_file>` = `{placeholder: [n, d]}` (diffusers `load_textual_inversion`), and one
`embeddings/<subject>.safetensors` = `{<encoder key>: [n, d], ...}` (A1111 / ComfyUI layout, e.g. SDXL's
`clip_l` and `clip_g`). All float32, each row the final embedding m*·v.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from safetensors.torch import load_file

from dti import io

# stock pipeline class -> "module:function" that adds saved embeddings to it; one line per backbone
PIPELINE_LOADERS = {
    "StableDiffusionXLPipeline": "dti.backbones.sdxl:load_into_pipeline",
}


def save_embeddings(concept, encoders, folder: Path, subject: str) -> list[Path]:
    rows = concept.embeddings()
    files = []
    for slot in encoders:
        files.append(Path(folder) / slot.diffusers_file)
        io.save_safetensors(files[-1], {concept.placeholder: rows[slot.key]})
    files.append(Path(folder) / f"{subject}.safetensors")
    io.save_safetensors(files[-1], {slot.key: rows[slot.key] for slot in encoders})
    return files


def read_token_file(path: Path) -> tuple[str, torch.Tensor]:  # noqa: F821
    """The (token, [n, d] tensor) of a diffusers-format embedding file."""
    state = load_file(str(path))
    if len(state) != 1:
        raise ValueError(f"{path}: expected one token, found keys {sorted(state)}")
    return next(iter(state.items()))


def load_embeddings(pipe, path: str | Path, token: str | None = None):
    """Add the concept saved in a run's `embeddings/` folder (or the run folder itself) to a stock pipeline."""
    folder = Path(path)
    if (folder / "embeddings").is_dir():
        folder = folder / "embeddings"
    name = type(pipe).__name__
    if name not in PIPELINE_LOADERS:
        raise TypeError(f"no embedding loader for {name} (known: {', '.join(PIPELINE_LOADERS)})")
    module, function = PIPELINE_LOADERS[name].split(":")
    return getattr(importlib.import_module(module), function)(pipe, folder, token)
