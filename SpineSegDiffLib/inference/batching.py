"""How many slices and samples go through one network call, from memory (never from S)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from SpineSegDiffLib.inference.loading import LoadedModel

if TYPE_CHECKING:
    pass



# Activation memory of one slice through the network is about this many fp32 values
# per feature-map element (a handful of live tensors per scale; measured within 2x on CPU).
_LIVE_TENSORS_PER_SCALE = 12


# On the CPU, more slices per call bring no more speed (see benchmarks/README.md), only memory.
CPU_MAX_SLICES = 16


CPU_MEMORY_BUDGET = 1.5 * 1024 ** 3


def slice_bytes(model: LoadedModel, size: int) -> float:
    """Rough activation bytes of one slice through the U-Net at size x size."""
    features = model.metadata["architecture"].get("features", [32] * 6)
    values = sum(f * (size / 2 ** min(i, 4)) ** 2 for i, f in enumerate(features))
    return values * 4 * _LIVE_TENSORS_PER_SCALE


def batch_plan(model: LoadedModel, n_slices: int, size: int, batch_slices: int | None = None,
               samples_per_call: int | None = None) -> tuple[int, int]:
    """(slices per network call, samples per network call), from memory, never from S.

    Every call holds the same group of samples (0..G-1, G..2G-1, ...) of the same slices,
    so sample s comes out bit-identical whether it is drawn alone, with others, or read
    back from the sample cache. The CPU gains nothing from more rows per call (see
    benchmarks/README.md), so it draws one sample per call; a GPU fills its memory with
    G samples per call (from its total memory, so the plan, and the cache key, do not
    change from run to run). Slice batches are balanced (18 slices: 9 + 9, not 16 + 2).
    """
    per_slice = slice_bytes(model, size)
    if model.device.type == "cuda":
        total = torch.cuda.get_device_properties(model.device).total_memory
        rows = max(1, int(total * 0.4 // per_slice))
    else:
        rows = max(1, int(min(CPU_MEMORY_BUDGET // per_slice, CPU_MAX_SLICES)))
    most = batch_slices or max(1, min(rows, n_slices))
    calls = math.ceil(n_slices / most)
    slices_per_call = math.ceil(n_slices / calls)
    if samples_per_call is None:
        samples_per_call = 1 if model.device.type != "cuda" else max(1, min(8, rows // slices_per_call))
    return slices_per_call, samples_per_call
