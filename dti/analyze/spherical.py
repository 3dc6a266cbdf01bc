"""Interpolation between two concepts' rows (Figures 4 and 15), row by row over the last dimension.

- slerp: Shoemake's spherical interpolation of the vectors as they are. Two DTI concepts share the norm m*, so
  every point of the path keeps it: the blend stays on the sphere the vocabulary lives on.
- lerp: the straight line; its midpoint is shorter than either end (by cos(angle/2)).
- nslerp: slerp of the unit directions with the norm interpolated linearly; for TI rows of different norms, where
  plain slerp's norm bulges or sags along the way.
"""

from __future__ import annotations

import torch

PARALLEL = 1e-6  # below this angle (radians) the two directions are taken as one and the line is used


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return torch.arccos(cos.clamp(-1.0, 1.0)).unsqueeze(-1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """sin((1-t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, Ω the angle between a and b (rows of the last dimension);
    the straight line where a and b are (nearly) parallel. t = 0 gives a, t = 1 gives b."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    dtype = torch.promote_types(a.dtype, torch.float32)
    a64, b64 = a.double(), b.double()
    omega = _angle(a64, b64)
    sin = torch.sin(omega)
    use_line = omega < PARALLEL
    safe = torch.where(use_line, torch.ones_like(sin), sin)
    wa = torch.where(use_line, torch.full_like(omega, 1 - t), torch.sin((1 - t) * omega) / safe)
    wb = torch.where(use_line, torch.full_like(omega, t), torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * torch.as_tensor(a) + t * torch.as_tensor(b)


def nslerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """slerp of the directions, norm (1-t)|a| + t|b|."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    direction = slerp(a / na, b / nb, t)
    return direction / direction.norm(dim=-1, keepdim=True) * ((1 - t) * na + t * nb)


BLENDS = {"slerp": slerp, "lerp": lerp, "nslerp": nslerp}


def blend(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float, how: str = "slerp"
          ) -> dict[str, torch.Tensor]:
    """Both concepts' rows blended per encoder key."""
    return {key: BLENDS[how](a[key], b[key], t) for key in a}
