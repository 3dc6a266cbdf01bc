"""Reading an embedding in any layout (`dti.method.formats.layouts`) as rows per encoder of a backbone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dti.core.errors import InputError
from dti.method.formats.layouts import UNKEYED, Layout, load_state, read_layout
from dti.method.slots import TextEncoderSlot

FILE_SUFFIXES = (".safetensors", ".pt", ".bin")


@dataclass
class ReadEmbedding:
    rows: dict[str, torch.Tensor]  # our encoder key (TextEncoderSlot.key) -> [n, d] float32 cpu
    format: str  # the detected layout: diffusers, a1111_pt, sdxl_keys, encoder_keys, kohya_emb_params, onetrainer
    token: str | None  # the token / name stored in the file, if any
    metadata: dict[str, str]  # safetensors metadata (or the .pt's "dti" dict / A1111 fields), {} if none


def _widths(encoders: list[TextEncoderSlot]) -> str:
    return ", ".join(f"{slot.key} {slot.width()}" for slot in encoders)


def _read_file(path: Path) -> Layout:
    if path.suffix not in FILE_SUFFIXES:
        raise InputError("embedding", str(path), f"is not an embedding file ({', '.join(FILE_SUFFIXES)})")
    try:
        state, metadata = load_state(path)
    except Exception as err:  # a truncated file, a pickle of code, not a tensor file at all
        raise InputError("embedding", str(path), f"cannot be read ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'})") from None
    try:
        return read_layout(state, metadata)
    except ValueError as err:
        raise InputError("embedding", str(path), str(err)) from None


def _read_folder(folder: Path, encoders: list[TextEncoderSlot]) -> Layout:
    """The diffusers file of each encoder in a run's `embeddings/` folder (or the run directory)."""
    if (folder / "embeddings").is_dir():
        folder = folder / "embeddings"
    rows, tokens, metadata = {}, set(), {}
    for slot in encoders:
        path = folder / slot.diffusers_file
        if not path.is_file():
            raise InputError("embedding", str(folder), f"has no {slot.diffusers_file} (the {slot.key} rows)")
        layout = _read_file(path)
        if layout.name != "diffusers":
            raise InputError("embedding", str(path), f"is a {layout.name} file, not a diffusers one")
        rows[slot.key] = layout.rows[UNKEYED]
        tokens.add(layout.token)
        metadata = metadata or dict(layout.metadata or {})
    if len(tokens) > 1:
        raise InputError("embedding", str(folder), f"its files hold different tokens ({', '.join(sorted(tokens))})")
    return Layout("diffusers", rows, tokens.pop() if tokens else None, metadata)


def _match(layout: Layout, encoders: list[TextEncoderSlot], source: Path) -> dict[str, torch.Tensor]:
    """Rows per encoder: keyed rows where the layout names its encoder, unkeyed ones by their width."""
    found = ", ".join(f"{k or 'unnamed'} {tuple(v.shape)}" for k, v in layout.rows.items())
    problem = f"holds {found}; the backbone expects {_widths(encoders)}"
    by_key = {slot.key: slot for slot in encoders}
    rows = {}
    for key, value in layout.rows.items():
        if value.dim() != 2 or value.shape[0] == 0:
            raise InputError("embedding", str(source), f"{problem} (rows must be [n, d], n >= 1)")
        if key == UNKEYED:
            fits = [slot for slot in encoders if slot.width() == value.shape[1]]
            if len(fits) != 1:
                raise InputError("embedding", str(source), problem)
            key = fits[0].key
        elif key not in by_key or by_key[key].width() != value.shape[1]:
            raise InputError("embedding", str(source), problem)
        if key in rows:
            raise InputError("embedding", str(source), problem)
        rows[key] = value
    missing = [slot.key for slot in encoders if slot.key not in rows]
    if missing:
        raise InputError("embedding", str(source), f"{problem} (no rows for {', '.join(missing)})")
    if len({value.shape[0] for value in rows.values()}) > 1:
        raise InputError("embedding", str(source), f"{problem} (the encoders' row counts differ)")
    for key, value in rows.items():
        if not torch.isfinite(value).all():
            raise InputError("embedding", str(source), f"its {key} rows are not finite (NaN or inf)")
    return {slot.key: rows[slot.key] for slot in encoders}  # in the backbone's order


def read_embedding(path: Path, encoders: list[TextEncoderSlot]) -> ReadEmbedding:
    """An embedding file (any layout of `dti.method.formats.layouts`), an `embeddings/` folder or a run directory
    (the diffusers file of each encoder), as rows per encoder of `encoders`. Any mismatch with the encoders'
    widths, missing rows or non-finite values: an InputError naming the file, what it holds and what was expected."""
    path = Path(path)
    if not path.exists():
        raise InputError("embedding", str(path), "does not exist")
    layout = _read_folder(path, encoders) if path.is_dir() else _read_file(path)
    rows = _match(layout, encoders, path)
    return ReadEmbedding(rows, layout.name, layout.token, dict(layout.metadata or {}))
