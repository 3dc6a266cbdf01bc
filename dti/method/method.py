"""What a method contributes besides its optimizer and magnitude, through one interface every method uses
(DTI and TI with the defaults): where the concept's rows start, the extra loss terms on them, whether they train
at all, and how the denoiser's loss becomes the training loss.

- `init`: `word` (the initializer word's vocabulary rows, TI and DTI) or `encoder_output` (CrossInit: each text
  encoder's final output at the word's own token positions, the word encoded alone).
- `anchor`: λ of λ·mean((E − E₀)²) per encoder, E₀ the initial rows (CrossInit's regulariser, 1e-5).
- `objective`: `mse`, or `dco` (−log σ(−β(L_model − L_ref)), L_ref the same denoiser with its adapter off, no
  gradient, on identical inputs).
- `train_embedding`: false keeps the rows where they start (an adapter-only baseline such as OFT's).
- `initializer_prefix`: words put before the initializer (OFT's "sks <class>").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dti.core import checks

INITS = ("word", "encoder_output")
OBJECTIVES = ("mse", "dco")


@dataclass
class ConceptMethod:
    init: str = "word"
    anchor: float = 0.0
    objective: str = "mse"
    dco_beta: float = 1000.0
    train_embedding: bool = True
    initializer_prefix: str = ""

    def __post_init__(self):
        checks.choice("method.init", self.init, INITS)
        checks.choice("method.objective", self.objective, OBJECTIVES)
        checks.number("method.anchor", self.anchor, minimum=0, maximum=1e3)
        checks.number("method.dco_beta", self.dco_beta, minimum=0, maximum=1e6, open_min=True)

    def extra_loss(self, tables: dict) -> torch.Tensor | None:
        """λ·mean((E − E₀)²), summed over the encoders' tables; None when λ = 0."""
        if not self.anchor:
            return None
        return sum(self.anchor * (t.embeddings() - t.initial).square().mean() for t in tables.values())

    def loss(self, model_loss: Callable[[], torch.Tensor], reference_loss: Callable[[], torch.Tensor] | None,
             per_sample: bool = False) -> torch.Tensor:
        """The training loss from the denoiser's (mean or per-sample) MSE; `reference_loss` runs the reference
        pass (DCO) and is only called when the objective needs it."""
        if self.objective == "mse":
            return model_loss()
        if reference_loss is None:
            raise ValueError("objective=dco needs an adapter to disable for the reference pass")
        with torch.no_grad():
            reference = reference_loss()
        return -F.logsigmoid(-self.dco_beta * (model_loss() - reference))
