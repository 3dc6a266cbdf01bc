"""Embedding files: the learned rows in the formats other tools read.

Always, per encoder: `embeddings/<diffusers_file>` = `{placeholder: [n, d]}` (diffusers `load_textual_inversion`;
dti reads these back). Then each file the backbone's `tool_files` writers make (the hook: a tuple of the writers
below, on the backbone):
- `encoder_keys_file`: `<subject>.safetensors` = `{<encoder key>: [n, d], ...}`, the layout A1111 and ComfyUI read
  for SDXL (`clip_l`, `clip_g`); the default.
- `a1111_pt_file`: `<subject>.pt`, the file A1111 writes for SD1.x/2.x (`string_to_param {"*": [n, d]}`); diffusers
  reads it too (token = its `name`, the placeholder). A1111 triggers on the file name.
- `emb_params_file`: `<subject>.safetensors` = `{"emb_params": [n, d]}`, the SD1.x/2.x file kohya writes and
  A1111 and ComfyUI read (diffusers: pass `token=`).
All float32, each row the final embedding m*·v.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dti.core import io
from dti.core.errors import NonFiniteError
from dti.method.slots import TextEncoderSlot

# A tool file writer: (rows {encoder key: [n, d]}, placeholder, encoders, folder, subject, metadata) -> its path
ToolFileWriter = Callable[[dict, str, list, Path, str, dict], Path]


def encoder_keys_file(rows, placeholder, encoders, folder, subject, metadata) -> Path:
    """`<subject>.safetensors` = {<encoder key>: rows}: A1111 / ComfyUI's SDXL layout."""
    path = folder / f"{subject}.safetensors"
    io.save_safetensors(path, {slot.key: rows[slot.key] for slot in encoders}, metadata)
    return path


def _single_encoder_rows(rows: dict, encoders: list, fmt: str) -> torch.Tensor:
    if len(encoders) != 1:  # SD1.x/2.x formats hold one text encoder's rows
        raise ValueError(f"the {fmt} format holds one text encoder's rows, not {len(encoders)}")
    return rows[encoders[0].key].detach().float().cpu().contiguous()


def a1111_pt_file(rows, placeholder, encoders, folder, subject, metadata) -> Path:
    """`<subject>.pt` as A1111 saves an embedding (`string_to_token` is A1111's constant: the id of "*"). `name` is
    the placeholder, the token diffusers adds; dti's metadata rides along under "dti" (readers ignore it)."""
    step = metadata.get("dti.step")
    path = folder / f"{subject}.pt"
    io.save_torch(path, {
        "string_to_token": {"*": 265}, "string_to_param": {"*": _single_encoder_rows(rows, encoders, "A1111 .pt")},
        "name": placeholder, "step": int(step) if step is not None else None,
        "sd_checkpoint": None, "sd_checkpoint_name": None, "dti": dict(metadata),
    })
    return path


def emb_params_file(rows, placeholder, encoders, folder, subject, metadata) -> Path:
    """`<subject>.safetensors` = {"emb_params": rows}: kohya's SD1.x/2.x embedding, read by A1111 and ComfyUI."""
    path = folder / f"{subject}.safetensors"
    io.save_safetensors(path, {"emb_params": _single_encoder_rows(rows, encoders, "emb_params")}, metadata)
    return path


def save_embeddings(rows: dict[str, torch.Tensor], placeholder: str, encoders: list[TextEncoderSlot], folder: Path,
                    subject: str, metadata: dict[str, str] | None = None,
                    tool_files: tuple[ToolFileWriter, ...] = (encoder_keys_file,)) -> list[Path]:
    """Write `rows` ({encoder key: [n, d]}) as the diffusers file of each encoder and the `tool_files`, each file
    with `metadata`; returns the files written. Rows that are not finite are refused before anything is written."""
    for key, value in rows.items():
        if not torch.isfinite(value).all():
            raise NonFiniteError(f"the learned {key} rows are not finite (NaN or inf): no embedding file written")
    files = []
    for slot in encoders:
        files.append(Path(folder) / slot.diffusers_file)
        io.save_safetensors(files[-1], {placeholder: rows[slot.key]}, metadata)
    for write in tool_files:
        files.append(write(rows, placeholder, encoders, Path(folder), subject, dict(metadata or {})))
    return files


def file_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} when it has none)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read_token_file(path: Path) -> tuple[str, torch.Tensor]:
    """The (token, [n, d] tensor) of a diffusers-format embedding file."""
    state = load_file(str(path))
    if len(state) != 1:
        raise ValueError(f"{path}: expected one token, found keys {sorted(state)}")
    return next(iter(state.items()))


def add_tokens(tokenizer, text_encoder, token: str, rows: torch.Tensor) -> list[str]:
    """Add `token` (`token`, `token_1`, … for several rows) to a tokenizer and write its rows into the encoder's
    embedding table, growing the table only where the new ids do not fit (UMT5's table has spare rows)."""
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


def write_kohya_lora(path: Path, lora: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], name: str,
                     alpha: float) -> Path:
    """One A1111 / kohya-style LoRA file (diffusers' PEFT -> kohya key conversion, `lora_unet_...`) with the
    embedding bundled under `bundle_emb.<name>.<encoder key>` (clip_l, clip_g), which ComfyUI's and A1111's
    LoRA loaders read as an embedding shipped with the LoRA."""
    from diffusers.utils import convert_state_dict_to_kohya

    state = convert_state_dict_to_kohya({f"unet.{k}": v.detach().float().cpu() for k, v in lora.items()})
    state = {k: (torch.tensor(float(alpha)) if k.endswith(".alpha") else v.contiguous()) for k, v in state.items()}
    state.update({f"bundle_emb.{name}.{key}": value.contiguous() for key, value in rows.items()})
    io.save_safetensors(path, state, {"format": "pt", "ss_network_module": "networks.lora"})
    return Path(path)
