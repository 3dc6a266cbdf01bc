"""The `optimizer=` group.

`RiemannianSGD` is the paper's Algorithm 1 on the unit sphere; `AdamW` is the Euclidean TI baseline;
`ProjectedAdamW` is AdamW followed by renormalising each row (Table 3's ablation). All accept a von Mises–Fisher
prior pull κμ through their param groups (`{"params": [v], "prior": μ}`): the gradient of −κ·μᵀv is −κμ.
`keeps_unit_rows` tells the builder which parametrisation an optimizer expects (directions or raw embeddings).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dti.core import checks
from dti.core.errors import InputError

MAX_LR = 10.0  # RSGD's lr is a step on the unit sphere; AdamW's a step per coordinate: beyond this, only NaN


def _check(lr: float, kappa: float, eps: float) -> None:
    checks.number("optimizer.lr", lr, minimum=0, maximum=MAX_LR, open_min=True)
    checks.number("kappa", kappa, minimum=0, maximum=1e3)
    checks.number("optimizer.eps", eps, minimum=0, maximum=1)


def _priors(group: dict) -> list[torch.Tensor | None]:
    """The prior of each parameter of a group: None, one tensor (one parameter) or one tensor per parameter."""
    prior, params = group.get("prior"), group["params"]
    priors = list(prior) if isinstance(prior, (list, tuple)) else [prior] * len(params)
    if len(priors) != len(params) or (prior is not None and torch.is_tensor(prior) and len(params) != 1):
        raise ValueError("give one prior tensor per parameter")
    for p, mu in zip(params, priors):
        if mu is not None and mu.shape != p.shape:
            raise ValueError(f"prior shape {tuple(mu.shape)} != parameter shape {tuple(p.shape)}")
    return priors


class RiemannianSGD(Optimizer):
    """Riemannian SGD on the unit sphere, row-wise (Algorithm 1 of the DTI paper).

    For each row v with data gradient g_data and prior direction μ:
        g = g_data − κμ;  g ← g − (gᵀv)v;  g ← g / ‖g‖;  v ← v − ηg;  v ← v / ‖v‖.
    With `beta > 0`, ‖g‖ is replaced by the square root of a bias-corrected EMA of ‖g‖² (an RMS-style step).
    Rows of the parameter must be unit vectors; κ = 0 or prior = None means no pull.
    """

    keeps_unit_rows = True

    def __init__(self, params, lr: float, kappa: float = 0.0, prior: torch.Tensor | None = None,
                 beta: float = 0.0, eps: float = 1e-8):
        _check(lr, kappa, eps)
        checks.number("optimizer.beta", beta, minimum=0, maximum=1, open_max=True)
        super().__init__(params, dict(lr=lr, kappa=kappa, prior=prior, beta=beta, eps=eps))
        for group in self.param_groups:
            _priors(group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, kappa, beta, eps = group["lr"], group["kappa"], group["beta"], group["eps"]
            for v, mu in zip(group["params"], _priors(group)):
                if v.grad is None:
                    continue
                g = v.grad.float()
                if kappa and mu is not None:
                    g = g - kappa * mu
                g = g - (g * v).sum(-1, keepdim=True) * v  # tangent space at v
                sq = (g * g).sum(-1, keepdim=True)
                if beta > 0:
                    state = self.state[v]
                    state["step"] = state.get("step", 0) + 1
                    ema = state.get("sq_norm_ema", torch.zeros_like(sq))
                    state["sq_norm_ema"] = ema = ema.mul_(beta).add_(sq, alpha=1 - beta)
                    norm = (ema / (1 - beta ** state["step"])).sqrt()
                else:
                    norm = sq.sqrt()
                v.sub_(lr * g / (norm + eps))
                v.div_(v.norm(dim=-1, keepdim=True))  # retraction onto the sphere
        return loss


class AdamW(torch.optim.AdamW):
    """Euclidean AdamW on the raw embedding (the TI baseline). Weight decay defaults to 0 on concept rows."""

    keeps_unit_rows = False

    def __init__(self, params, lr: float, kappa: float = 0.0, prior: torch.Tensor | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        _check(lr, kappa, eps)
        if len(betas) != 2:
            raise InputError("optimizer.betas", list(betas), "must be two numbers [beta1, beta2], each in [0, 1)")
        for beta in betas:
            checks.number("optimizer.betas", beta, minimum=0, maximum=1, open_max=True)
        checks.number("optimizer.weight_decay", weight_decay, minimum=0, maximum=1)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("kappa", kappa)
            group.setdefault("prior", prior)
            _priors(group)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["kappa"]:
                for p, mu in zip(group["params"], _priors(group)):
                    if p.grad is not None and mu is not None:
                        p.grad.sub_(group["kappa"] * mu)
        return super().step(closure)


class ProjectedAdamW(AdamW):
    """AdamW on the direction rows, each row renormalised to the unit sphere after every step."""

    keeps_unit_rows = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.div_(p.norm(dim=-1, keepdim=True))
        return loss
