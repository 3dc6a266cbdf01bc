"""The layouts embedding files come in, each a reader (the file's tensors -> rows) and a writer (rows -> tensors),
and `detect`, which tells a layout from a file's keys and structure (never its name).

Rows come back keyed by our encoder key (`TextEncoderSlot.key`) where the layout names its encoder, or under
`UNKEYED` where it does not (diffusers, A1111 `.pt`, kohya `emb_params`): the reader of `dti.method.formats.reading`
then matches those to the backbone's encoders by their width. Sources, read for these layouts:
- A1111: AUTOMATIC1111/stable-diffusion-webui modules/textual_inversion/textual_inversion.py (`Embedding.save`
  writes `string_to_param {"*": rows}`; the loader also takes `{clip_l, clip_g}` and one-tensor dicts).
- OneTrainer: Nerogar/OneTrainer modules/modelSaver/stableDiffusionXL/StableDiffusionXLEmbeddingSaver.py
  (`clip_l`, `clip_g`), modules/modelSaver/sana/SanaEmbeddingSaver.py (`gemma`, `gemma_out`),
  modules/modelSaver/stableDiffusion/StableDiffusionEmbeddingSaver.py (`emp_params`, `emp_params_out`).
- ComfyUI: comfy/sd1_clip.py `load_embed` (the tokenizer's `embedding_key`: clip_l, clip_g, umt5xxl, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

UNKEYED = ""  # the rows of a layout that does not say which encoder they belong to

# layouts keyed by encoder, as {key in the file: our encoder key}
SDXL_KEYS = {"clip_l": "clip_l", "clip_g": "clip_g"}  # A1111, ComfyUI and OneTrainer's SDXL file
OUR_KEYS = {"clip_l": "clip_l", "clip_g": "clip_g", "clip_h": "clip_h", "gemma2": "gemma2", "umt5xxl": "umt5xxl"}
ONETRAINER_KEYS = {"gemma": "gemma2", "clip_l": "clip_l", "clip_g": "clip_g"}
ONETRAINER_SINGLE_CLIP = "emp_params"  # OneTrainer's SD1.x/2.x key (sic), one CLIP encoder
ONETRAINER_OUTPUT_KEYS = ("gemma_out", "emp_params_out")  # output embeddings, which dti does not learn


@dataclass
class Layout:
    """One file's contents as a layout reads them."""

    name: str
    rows: dict[str, torch.Tensor]  # our encoder key (or UNKEYED) -> [n, d]
    token: str | None = None
    metadata: dict[str, str] | None = None


def load_state(path: Path) -> tuple[dict, dict[str, str]]:
    """(the file's tensors or pickled dict, its safetensors metadata) for .safetensors, .pt and .bin files.
    Pickles are read with `weights_only=True`: tensors, containers and plain values, no code."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    return torch.load(path, map_location="cpu", weights_only=True), {}


def _one_tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def detect(state) -> str:
    """The layout of a file's contents; ValueError (with what was found) when none fits."""
    if not isinstance(state, dict) or not state:
        raise ValueError(f"holds a {type(state).__name__}, not a dict of tensors")
    keys = set(state)
    if "string_to_param" in keys:
        return "a1111_pt"
    tensors = {k for k in keys if _one_tensor(state[k])}
    if keys == set(SDXL_KEYS):
        return "sdxl_keys"
    if keys & {"gemma", ONETRAINER_SINGLE_CLIP, *ONETRAINER_OUTPUT_KEYS} and keys <= {
            "gemma", ONETRAINER_SINGLE_CLIP, *ONETRAINER_OUTPUT_KEYS}:
        return "onetrainer"
    if keys == {"emb_params"}:
        return "kohya_emb_params"
    if len(keys) == 1 and keys <= set(OUR_KEYS):
        return "encoder_keys"
    if len(tensors) == 1 and len(keys) == 1:
        return "diffusers"
    raise ValueError(f"matches no known embedding layout (keys: {', '.join(sorted(map(str, keys)))})")


def _rows(value: torch.Tensor) -> torch.Tensor:
    """[n, d] float32 on the CPU; a lone [d] vector (old diffusers `.bin` files) becomes one row."""
    value = value.detach().float().cpu()
    return value[None] if value.dim() == 1 else value


def read_layout(state: dict, metadata: dict[str, str]) -> Layout:
    """The rows, token and metadata of a file's contents, whichever layout they are in."""
    name = detect(state)
    token = metadata.get("dti.placeholder") or None
    if name == "a1111_pt":
        params = state["string_to_param"]
        if len(params) != 1:
            raise ValueError(f"holds {len(params)} A1111 terms ({', '.join(map(str, params))}), not one")
        extra = state.get("dti") if isinstance(state.get("dti"), dict) else {
            k: state[k] for k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name") if state.get(k) is not None}
        metadata = {str(k): str(v) for k, v in extra.items()}
        return Layout(name, {UNKEYED: _rows(next(iter(params.values())))}, state.get("name") or token, metadata)
    if name == "diffusers":
        (key, value), = state.items()
        return Layout(name, {UNKEYED: _rows(value)}, key, metadata)
    if name == "kohya_emb_params":
        return Layout(name, {UNKEYED: _rows(state["emb_params"])}, token, metadata)
    if name == "onetrainer":
        found = [k for k in ONETRAINER_OUTPUT_KEYS if k in state]
        if found:
            raise ValueError(f"holds OneTrainer output embeddings ({', '.join(found)}), which dti does not use; "
                             "save the embedding without them")
        if ONETRAINER_SINGLE_CLIP in state:
            return Layout(name, {UNKEYED: _rows(state[ONETRAINER_SINGLE_CLIP])}, token, metadata)
    keys = {"sdxl_keys": SDXL_KEYS, "onetrainer": ONETRAINER_KEYS, "encoder_keys": OUR_KEYS}[name]
    return Layout(name, {keys[k]: _rows(v) for k, v in state.items()}, token, metadata)


# -- writers: rows {our encoder key: [n, d]} -> the tensors of one file --------------------------------------
def single_rows(rows: dict[str, torch.Tensor], layout: str) -> torch.Tensor:
    if len(rows) != 1:  # SD1.x/2.x layouts hold one text encoder's rows
        raise ValueError(f"the {layout} layout holds one text encoder's rows, not {len(rows)} ({', '.join(rows)})")
    return next(iter(rows.values())).detach().float().cpu().contiguous()


def encoder_keys_tensors(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{our encoder key: rows}: A1111 / ComfyUI / OneTrainer's SDXL layout (clip_l, clip_g), and Wan's umt5xxl
    (the `embedding_key` ComfyUI's UMT5 tokenizer declares)."""
    return {key: value.detach().float().cpu().contiguous() for key, value in rows.items()}


def onetrainer_tensors(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OneTrainer's keys: clip_l/clip_g for SDXL, `gemma` for SANA, `emp_params` for one CLIP encoder."""
    if len(rows) == 1 and set(rows) <= {"clip_l", "clip_h"}:
        return {ONETRAINER_SINGLE_CLIP: single_rows(rows, "OneTrainer")}
    theirs = {ours: file_key for file_key, ours in ONETRAINER_KEYS.items()}
    missing = [key for key in rows if key not in theirs]
    if missing:
        raise ValueError(f"OneTrainer has no embedding key for the {', '.join(missing)} encoder")
    return {theirs[key]: value.detach().float().cpu().contiguous() for key, value in rows.items()}


def a1111_pt_state(rows: dict[str, torch.Tensor], name: str, step: int | None, metadata: dict[str, str]) -> dict:
    """The dict A1111's `Embedding.save` pickles (`string_to_token` is its constant, the id of "*"); dti's
    metadata rides along under "dti" (A1111 and ComfyUI read only the keys they know)."""
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": single_rows(rows, "A1111 .pt")},
            "name": name, "step": step, "sd_checkpoint": None, "sd_checkpoint_name": None, "dti": dict(metadata)}
