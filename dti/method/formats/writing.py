"""What a run writes: the learned rows as the diffusers file of each encoder, which dti reads back, and the tool
files of the backbone (`Backbone.tool_files`: a tuple of the writers below), each named after the concept's trigger
(`<subject>-<method>` unless `trigger` is set): A1111 and ComfyUI use a file's name as the word that calls it, so it
must not be an ordinary word. The layouts themselves: dti.method.formats.layouts. All float32, each row the final
embedding m*·v, every file with the same metadata (dti.method.formats.metadata).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dti.core import io
from dti.core.errors import NonFiniteError
from dti.method.formats.layouts import a1111_pt_state, encoder_keys_tensors, onetrainer_tensors, single_rows
from dti.method.slots import TextEncoderSlot

# A tool file writer: (rows {encoder key: [n, d]}, placeholder, encoders, folder, trigger, metadata) -> its path
ToolFileWriter = Callable[[dict, str, list, Path, str, dict], Path]


def _ordered(rows: dict, encoders: list) -> dict:
    return {slot.key: rows[slot.key] for slot in encoders}


def encoder_keys_file(rows, placeholder, encoders, folder, trigger, metadata) -> Path:
    """`<trigger>.safetensors` = {<encoder key>: rows}: A1111 / ComfyUI / OneTrainer's SDXL layout (clip_l,
    clip_g); Wan's umt5xxl."""
    path = folder / f"{trigger}.safetensors"
    io.save_safetensors(path, encoder_keys_tensors(_ordered(rows, encoders)), metadata)
    return path


def onetrainer_file(rows, placeholder, encoders, folder, trigger, metadata) -> Path:
    """`<trigger>.safetensors` with OneTrainer's keys (SANA: `gemma`)."""
    path = folder / f"{trigger}.safetensors"
    io.save_safetensors(path, onetrainer_tensors(_ordered(rows, encoders)), metadata)
    return path


def a1111_pt_file(rows, placeholder, encoders, folder, trigger, metadata) -> Path:
    """`<trigger>.pt` as A1111 saves an embedding for SD1.x/2.x. `name` is the placeholder, the token diffusers
    adds (A1111 itself triggers on the file name); the metadata rides along under "dti"."""
    step = metadata.get("dti.step")
    path = folder / f"{trigger}.pt"
    io.save_torch(path, a1111_pt_state(_ordered(rows, encoders), placeholder,
                                       int(step) if step is not None else None, metadata))
    return path


def emb_params_file(rows, placeholder, encoders, folder, trigger, metadata) -> Path:
    """`<trigger>.safetensors` = {"emb_params": rows}: kohya's SD1.x/2.x embedding, read by A1111 and ComfyUI."""
    path = folder / f"{trigger}.safetensors"
    io.save_safetensors(path, {"emb_params": single_rows(_ordered(rows, encoders), "emb_params")}, metadata)
    return path


def save_embeddings(rows: dict[str, torch.Tensor], placeholder: str, encoders: list[TextEncoderSlot], folder: Path,
                    trigger: str, metadata: dict[str, str] | None = None,
                    tool_files: tuple[ToolFileWriter, ...] = (encoder_keys_file,)) -> list[Path]:
    """Write `rows` ({encoder key: [n, d]}) as the diffusers file of each encoder and the `tool_files`, each file
    with `metadata`; returns the files written. Rows that are not finite are refused before anything is written."""
    for key, value in rows.items():
        if not torch.isfinite(value).all():
            raise NonFiniteError(f"the learned {key} rows are not finite (NaN or inf): no embedding file written")
    metadata = {"format": "pt", **(metadata or {})}  # diffusers' convention for a safetensors file of torch tensors
    files = []
    for slot in encoders:
        files.append(Path(folder) / slot.diffusers_file)
        io.save_safetensors(files[-1], {placeholder: rows[slot.key]}, metadata)
    for write in tool_files:
        files.append(write(rows, placeholder, encoders, Path(folder), trigger, dict(metadata or {})))
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


def _layout_tensors(layout: str, rows: dict[str, torch.Tensor], encoders: list) -> dict[str, torch.Tensor]:
    if layout == "sdxl_keys" and [slot.key for slot in encoders] != ["clip_l", "clip_g"]:
        raise ValueError(f"the sdxl_keys layout holds SDXL's clip_l and clip_g, not {', '.join(rows)}")
    if layout in ("encoder_keys", "sdxl_keys"):
        return encoder_keys_tensors(rows)
    if layout == "onetrainer":
        return onetrainer_tensors(rows)
    return {"emb_params": single_rows(rows, "emb_params")}  # kohya_emb_params


WRITTEN_LAYOUTS = ("diffusers", "a1111_pt", "sdxl_keys", "encoder_keys", "kohya_emb_params", "onetrainer")


def write_embedding(path: Path, layout: str, rows: dict[str, torch.Tensor], token: str,
                    encoders: list[TextEncoderSlot], metadata: dict[str, str]) -> list[Path]:
    """`rows` in one layout of WRITTEN_LAYOUTS: diffusers into the folder `path` (each encoder's file), the others
    as the file `path` (`.pt` for a1111_pt, `.safetensors` otherwise). ValueError for rows the layout cannot hold."""
    rows, path = _ordered(rows, encoders), Path(path)
    metadata = {"format": "pt", **metadata, "dti.placeholder": token}  # the token, also where the layout has none
    if layout == "diffusers":
        files = [path / slot.diffusers_file for slot in encoders]
        for slot, file in zip(encoders, files):
            io.save_safetensors(file, {token: rows[slot.key].detach().float().cpu().contiguous()}, metadata)
        return files
    step = metadata.get("dti.step")
    if layout == "a1111_pt":
        io.save_torch(path, a1111_pt_state(rows, token, int(step) if step and step.isdigit() else None, metadata))
    else:
        io.save_safetensors(path, _layout_tensors(layout, rows, encoders), metadata)
    return [path]
