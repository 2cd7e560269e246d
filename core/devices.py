"""Device and dtype resolution: "auto" → CUDA fp16 when present, CPU fp32 otherwise; the dtype a part's
weights are placed in (`placement_dtype`)."""

from __future__ import annotations

import torch

from core.errors import InputError

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`"auto"`/None → cuda if available else cpu; anything else must name an available torch device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}", hint="use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available", hint="use --device cpu or auto")
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None → float16 on CUDA, float32 elsewhere; a name from DTYPE_NAMES or a floating torch.dtype."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise InputError(f"dtype {dtype} is not a floating-point type", hint="use float32, float16 or bfloat16")
        return dtype
    resolved = DTYPE_NAMES.get(str(dtype).lower())
    if resolved is None:
        raise InputError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPE_NAMES)}")
    return resolved


def placement_dtype(part: object, requested: torch.dtype) -> torch.dtype:
    """The dtype a part's weights take when it is placed in `requested`: what its own
    `placement_dtype(requested)` says when it has one (e.g. a VAE that stays float32 for float16), else
    `requested`."""
    choose = getattr(part, "placement_dtype", None)
    return choose(requested) if callable(choose) else requested
