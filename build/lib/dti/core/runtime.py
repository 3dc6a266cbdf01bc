"""Device and dtype choices (bf16 frozen weights on CUDA, fp32 on CPU, unless the config says otherwise), and
which GPUs this machine offers."""

from __future__ import annotations

import os
import subprocess

import torch

from dti.core.errors import InputError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str, field: str = "model.device") -> torch.device:
    """auto (CUDA when there is one), cpu, cuda or cuda:N; a device this machine lacks is refused by name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(field, device, "is not a device (auto, cpu, cuda, cuda:N)") from None
    missing = not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    if resolved.type == "cuda" and missing:
        raise InputError(field, device, "is not available on this machine (no such CUDA device); use auto or cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(field, device, "is not supported (auto, cpu, cuda, cuda:N)")
    return resolved


def resolve_dtype(dtype: str, device: torch.device, field: str = "model.dtype") -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise InputError(field, dtype, f"unknown dtype (choose from auto, {', '.join(_DTYPES)})")
    return _DTYPES[dtype]


def visible_gpus() -> list[str]:
    """The GPUs this box offers to jobs: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists. CUDA is not
    initialised here (the parent of a pool of GPU workers must not hold a CUDA context)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]
