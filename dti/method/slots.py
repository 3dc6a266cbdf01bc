"""What the method needs of one text encoder: its tokenizer, its input-embedding lookup, and how its rows are
named in embedding files. Each backbone exposes its text encoders as slots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class TextEncoderSlot:
    """One text encoder of a backbone and everything needed to add and export a concept token for it."""

    key: str  # A1111/ComfyUI key of this encoder's rows, e.g. "clip_l"
    tokenizer: Any
    encoder: nn.Module
    diffusers_file: str  # e.g. "learned_embeds.safetensors", loadable by pipe.load_textual_inversion
    max_length: int
    # rows the tokenizer can produce; the vocabulary statistics (magnitude) are taken over these
    num_vocab_rows: int = 0
    # what the stock pipeline does to a prompt before tokenising it (SANA lower-cases, Wan cleans text)
    preprocess: Callable[[str], str] = str
    # the rows' width; 0: read from the encoder's table (set where there is no encoder, e.g. `python -m dti.convert`)
    dim: int = 0

    def width(self) -> int:
        return self.dim or self.input_embeddings().weight.shape[1]

    def input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.encoder.set_input_embeddings(module)
