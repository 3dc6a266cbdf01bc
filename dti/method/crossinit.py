"""CrossInit's initial rows: the initializer word encoded alone by a text encoder (padded to the encoder's length,
with the attention mask), and the encoder's final output (after its last norm) at the word's own token positions
(no BOS, EOS or padding): one vector per token, norm included."""

from __future__ import annotations

import torch

from dti.core.errors import InputError
from dti.method.slots import TextEncoderSlot


def _find(sequence: list[int], part: list[int]) -> int:
    for start in range(len(sequence) - len(part) + 1):
        if sequence[start:start + len(part)] == part:
            return start
    return -1


@torch.no_grad()
def encoder_output_rows(slot: TextEncoderSlot, word: str, count: int) -> torch.Tensor:
    """(count, d) rows: the word's token outputs, the last one repeated (or the first `count` kept) when the
    concept has another number of vectors."""
    text = slot.preprocess(word)
    batch = slot.tokenizer(text, padding="max_length", max_length=slot.max_length, truncation=True,
                           return_tensors="pt")
    alone = slot.tokenizer(text, add_special_tokens=False).input_ids
    start = _find(batch.input_ids[0].tolist(), alone)
    if not alone or start < 0:
        raise InputError("data.initializer", word, f"its tokens cannot be found in the {slot.key} encoding")
    device = next(slot.encoder.parameters()).device
    hidden = slot.encoder(input_ids=batch.input_ids.to(device),
                          attention_mask=batch.attention_mask.to(device)).last_hidden_state[0]
    rows = hidden[start:start + len(alone)].float()
    return torch.cat([rows, rows[-1:].expand(max(0, count - len(rows)), -1)])[:count]
