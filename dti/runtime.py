"""Device and dtype choices: bf16 frozen weights on CUDA, fp32 on CPU, unless the config says otherwise."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, field: str = "model.dtype") -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        from dti.errors import InputError

        raise InputError(field, dtype, f"unknown dtype (choose from auto, {', '.join(_DTYPES)})")
    return _DTYPES[dtype]
