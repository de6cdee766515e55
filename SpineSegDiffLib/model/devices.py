"""Choosing where the network runs, and saying so."""

from __future__ import annotations

import torch

from SpineSegDiffLib.core.device_names import DEVICE_CHOICES, canonical_device
from SpineSegDiffLib.core.errors import InputError


def choose_device(requested: str = "auto") -> tuple[torch.device, str | None]:
    """Return (device, note). `note` tells the user about a fallback, else None."""
    requested = canonical_device(requested)
    if requested not in DEVICE_CHOICES:
        raise InputError(f"unknown device '{requested}'; choose one of {', '.join(DEVICE_CHOICES)}")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda"), None
    mps = getattr(torch.backends, "mps", None)
    if requested in ("auto", "mps") and mps is not None and mps.is_available():
        return torch.device("mps"), None
    if requested == "cuda":
        return torch.device("cpu"), "no CUDA GPU is available: running on the CPU (slower)"
    if requested == "mps":
        return torch.device("cpu"), "no Apple GPU (MPS) is available: running on the CPU (slower)"
    if requested == "auto":
        return torch.device("cpu"), "no GPU found: running on the CPU"
    return torch.device("cpu"), None


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 where supported (no loss scaling needed)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device):
    """Mixed precision on CUDA (see autocast_dtype), a no-op context elsewhere."""
    import contextlib

    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
