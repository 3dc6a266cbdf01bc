"""A device-side record of the first step whose loss or gradient was not finite: updated every step without a
host sync, read only where the loop syncs anyway (logging, checkpoint, validation, the end). A run that went
non-finite stops there with one line, before anything made from the bad values is written."""

from __future__ import annotations

import torch

from dti.core.errors import NonFiniteError


class Health:
    def __init__(self, encoders: list[str], device: torch.device):
        self.names = ["loss", *(f"{key} gradient" for key in encoders)]
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # the first bad step, -1 while fine
        self.which = torch.zeros((), dtype=torch.long, device=device)  # index into `names`

    @torch.no_grad()
    def update(self, step: int, loss: torch.Tensor, grads: list[torch.Tensor | None]) -> None:
        bad = torch.stack([~torch.isfinite(loss).all()] + [~torch.isfinite(g).all() if g is not None else
                                                           torch.zeros((), dtype=torch.bool, device=loss.device)
                                                           for g in grads])
        new = (self.first < 0) & bad.any()
        self.first = torch.where(new, step, self.first)
        self.which = torch.where(new, bad.long().argmax(), self.which)

    def check(self, last_good: str | None) -> None:
        first = int(self.first)
        if first >= 0:
            kept = f"the last good checkpoint {last_good} is kept" if last_good else "no checkpoint was written"
            raise NonFiniteError(f"step {first}: the {self.names[int(self.which)]} is not finite (NaN or inf); "
                                 f"training stopped, {kept}. Lower optimizer.lr, or check magnitude.value")
