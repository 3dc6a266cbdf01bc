"""Where things are inside a text encoder, found by structure rather than by model name: the vocabulary rows, the
stack of blocks, and (for encoders with learned absolute positions, as CLIP) the position table and the first
block's pre-norm LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from dti.core.errors import InputError
from dti.method.concept import word_ids
from dti.method.slots import TextEncoderSlot

# the block stacks of the encoders we know: CLIP (text_model.encoder.layers), Gemma (layers), T5 (encoder.block)
BLOCK_PATHS = ("text_model.encoder.layers", "encoder.layers", "layers", "encoder.block", "block", "transformer.h")
POSITION_NAMES = ("position_embedding", "embed_positions", "position_embeddings", "wpe")
FIRST_NORM_NAMES = ("layer_norm1", "ln_1", "input_layernorm")


def vocabulary(slot: TextEncoderSlot, device: str | torch.device = "cpu") -> torch.Tensor:
    """The rows the tokenizer can produce, fp32 on `device` (the frozen table, below any concept lookup added on
    top). On the CPU by default, where the runs' rows are read: the probe asks for the encoder's device."""
    return slot.input_embeddings().weight[: slot.num_vocab_rows].detach().to(device, torch.float32)


def token_names(slot: TextEncoderSlot, ids) -> list[str]:
    """Readable token strings: CLIP's end-of-word mark and SentencePiece's space mark dropped."""
    names = slot.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return [str(n).replace("</w>", "").replace("▁", "") or repr(n) for n in names]


def word_rows(slot: TextEncoderSlot, word: str) -> tuple[list[int], torch.Tensor]:
    """A word's ids inside a prompt and their vocabulary rows."""
    ids = word_ids(slot, word)
    if not ids:
        raise InputError("word", word, f"tokenizes to nothing with the {slot.key} tokenizer")
    weight = slot.input_embeddings().weight
    return ids, weight[torch.tensor(ids, device=weight.device)].detach().float().cpu()


def initializer_rows(slot: TextEncoderSlot, word: str, n: int) -> torch.Tensor:
    """The rows a concept of n vectors started from (dti.method.concept: extra vectors repeat the last token)."""
    ids, rows = word_rows(slot, word)
    index = (list(range(len(ids))) + [len(ids) - 1] * n)[:n]
    return rows[torch.tensor(index)]


def _get(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def blocks(slot: TextEncoderSlot) -> nn.ModuleList:
    """The encoder's stack of residual blocks."""
    for path in BLOCK_PATHS:
        found = _get(slot.encoder, path)
        if isinstance(found, nn.ModuleList) and len(found):
            return found
    raise InputError("model", type(slot.encoder).__name__, f"the {slot.key} encoder has no block stack at "
                     f"{', '.join(BLOCK_PATHS)}; add its path to dti.analyze.anatomy.BLOCK_PATHS")


def position_table(slot: TextEncoderSlot) -> nn.Embedding | None:
    """The learned absolute position embeddings, or None (rotary or relative positions: Gemma, T5)."""
    for name, module in slot.encoder.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in POSITION_NAMES:
            return module
    return None


def first_norm(slot: TextEncoderSlot) -> nn.LayerNorm | None:
    """The LayerNorm the first block applies to its input e + p (pre-norm), or None."""
    first = blocks(slot)[0]
    for name in FIRST_NORM_NAMES:
        if isinstance(getattr(first, name, None), nn.LayerNorm):
            return getattr(first, name)
    return next((m for m in first.modules() if isinstance(m, nn.LayerNorm)), None)


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The encoder's LayerNorm in fp32 (the encoder itself may run in bf16)."""
    weight = None if norm.weight is None else norm.weight.detach().float()
    bias = None if norm.bias is None else norm.bias.detach().float()
    return nn.functional.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)
