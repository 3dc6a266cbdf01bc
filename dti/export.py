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
    "SanaPipeline": "dti.export:load_into_single_encoder_pipeline",
    "WanPipeline": "dti.export:load_into_single_encoder_pipeline",
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


def add_tokens(tokenizer, text_encoder, token: str, rows) -> list[str]:
    """Add `token` (`token`, `token_1`, … for several rows) to a tokenizer and write its rows into the encoder's
    embedding table, growing the table only where the new ids do not fit (UMT5's table has spare rows)."""
    import torch

    tokens = [token] + [f"{token}_{i}" for i in range(1, rows.shape[0])]
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise ValueError(f"{token} (or one of its _N tokens) is already in the tokenizer")
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if max(ids) >= text_encoder.get_input_embeddings().num_embeddings:
        text_encoder.resize_token_embeddings(max(ids) + 1, mean_resizing=False)  # the rows are set just below
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[torch.tensor(ids, device=weight.device)] = rows.to(weight.device, weight.dtype)
    return tokens


def load_into_single_encoder_pipeline(pipe, folder: Path, token: str | None = None) -> list[str]:
    """Pipelines with one text encoder and no `load_textual_inversion` (SanaPipeline, WanPipeline)."""
    saved, rows = read_token_file(Path(folder) / "learned_embeds.safetensors")
    return add_tokens(pipe.tokenizer, pipe.text_encoder, token or saved, rows)


def load_embeddings(pipe, path: str | Path, token: str | None = None) -> list[str]:
    """Add the concept saved in a run's `embeddings/` folder (or the run folder itself) to a stock pipeline.
    Returns the concept's tokens. SDXL expands a multi-vector `<dog>` in prompts by itself; SanaPipeline and
    WanPipeline do not, so write `" ".join(tokens)` where the concept goes."""
    folder = Path(path)
    if (folder / "embeddings").is_dir():
        folder = folder / "embeddings"
    name = type(pipe).__name__
    if name not in PIPELINE_LOADERS:
        raise TypeError(f"no embedding loader for {name} (known: {', '.join(PIPELINE_LOADERS)})")
    module, function = PIPELINE_LOADERS[name].split(":")
    return getattr(importlib.import_module(module), function)(pipe, folder, token)
