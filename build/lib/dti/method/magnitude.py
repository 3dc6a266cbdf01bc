"""The `magnitude=` group: which norm m* the concept's rows get, per encoder.

DTI fixes ‖e‖ to an in-distribution value and learns only the direction. Statistics are taken over the rows the
tokenizer can produce (the new rows are not there yet). `exclude_special` drops the tokenizer's special tokens
from the statistic; it is off by default because the paper's m* is the plain mean over the whole vocabulary
table, and for CLIP the two special rows of 49 408 change the mean by ~1e-5.
"""

from __future__ import annotations

import torch

from dti.core.errors import InputError


class Magnitude:
    """Returns the per-row norm (shape (n,)) for the concept, or None to learn the norm too (plain TI)."""

    fixed = True

    def __call__(self, vocab: torch.Tensor, init: torch.Tensor, special_ids: list[int]) -> torch.Tensor | None:
        raise NotImplementedError


class VocabNorm(Magnitude):
    """`mean`, `min` or `max` of the vocabulary's row norms."""

    def __init__(self, statistic: str = "mean", exclude_special: bool = False):
        if statistic not in ("mean", "min", "max"):
            raise InputError("magnitude.statistic", statistic, "choose mean, min or max")
        self.statistic, self.exclude_special = statistic, exclude_special

    @torch.no_grad()
    def __call__(self, vocab, init, special_ids):
        norms = vocab.float().norm(dim=-1)
        if self.exclude_special and special_ids:
            keep = torch.ones(len(norms), dtype=torch.bool, device=norms.device)
            keep[[i for i in special_ids if i < len(norms)]] = False
            norms = norms[keep]
        value = getattr(norms, self.statistic)()
        return value.expand(init.shape[0]).clone()


class FixedValue(Magnitude):
    """`magnitude=float`: a given number, e.g. Table 3's m* = 5.0."""

    def __init__(self, value: float, field: str = "magnitude.value"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(field, value, "must be a number") from None
        if not value > 0 or value == float("inf"):
            raise InputError(field, value, "must be a positive finite number")
        self.value = value

    def __call__(self, vocab, init, special_ids):
        return torch.full((init.shape[0],), self.value, device=init.device)


class InitializerNorm(Magnitude):
    """`init`: each vector keeps its initializer token's own norm."""

    def __call__(self, vocab, init, special_ids):
        return init.float().norm(dim=-1)


class Free(Magnitude):
    """`none`: plain TI, the embedding itself is the parameter (norm and direction both learned)."""

    fixed = False

    def __call__(self, vocab, init, special_ids):
        return None
