"""`--samples auto`: draw samples in small groups and stop once the result stops changing.

Criterion (after each group, comparing the fused result of S samples with that of the
S - STEP before it, on the model grid):

* fused masks: the Dice of each structure's mask (fused probability > 0.5) between the
  two sizes is at least ``DICE_STABLE`` (a structure empty in both counts as 1), and
* uncertainty: the mean absolute change of the per-structure entropy, over the voxels
  where either size is at all unsure (entropy > ``UNCERTAIN_BAND`` bits), is at most
  ``UNCERTAINTY_STABLE`` bits.

Both must hold; S starts at ``FIRST`` (the uncertainty needs a spread) and grows by
``STEP`` up to the cap (default ``CAP``, the paper's S). Samples are the same ones a fixed
S would draw (sample s has its own noise), so the sample cache serves both. No torch:
the cached path (``cached_run.py``) applies the same rule to samples read from disk.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from SpineSegDiffLib.inference.fusion import GridPrediction, fuse_samples

FIRST = 3
STEP = 2
CAP = 15
DICE_STABLE = 0.99
UNCERTAIN_BAND = 0.1
UNCERTAINTY_STABLE = 0.02


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def change_between(before: GridPrediction, after: GridPrediction) -> dict[str, float]:
    """{"dice": the lowest per-structure Dice of the fused masks, "uncertainty_change": mean |delta entropy|
    in bits over the unsure band} between two ensemble sizes."""
    masks_before, masks_after = before.probabilities > 0.5, after.probabilities > 0.5
    dice = min(_dice(masks_before[:, c], masks_after[:, c]) for c in range(masks_after.shape[1]))
    band = np.maximum(before.entropy, after.entropy) > UNCERTAIN_BAND
    change = float(np.abs(after.entropy - before.entropy)[band].mean()) if band.any() else 0.0
    return {"dice": round(dice, 5), "uncertainty_change": round(change, 5)}


def is_stable(change: dict[str, float]) -> bool:
    return change["dice"] >= DICE_STABLE and change["uncertainty_change"] <= UNCERTAINTY_STABLE


def sizes(cap: int) -> list[int]:
    """The ensemble sizes tried: FIRST, FIRST + STEP, ... and the cap itself last."""
    out = list(range(min(FIRST, cap), cap, STEP))
    return out + [cap] if not out or out[-1] != cap else out


def choose_samples(first_samples: Callable[[int], list[np.ndarray] | None], fused_steps: int, extras: bool,
                   cap: int = CAP) -> tuple[GridPrediction, list[np.ndarray], list[dict]] | None:
    """Grow S until the result is stable (or the cap): (fused result, its samples, the trace).

    ``first_samples(k)`` gives samples 0..k-1 (drawing what is missing), or None when it
    cannot (the cached path without enough samples on disk): then this returns None.
    """
    trace: list[dict] = []
    before = None
    for size in sizes(cap):
        samples = first_samples(size)
        if samples is None:
            return None
        now = fuse_samples(samples, fused_steps, extras)
        entry: dict = {"samples": size}
        if before is not None:
            entry.update(change_between(before, now))
        trace.append(entry)
        if before is not None and is_stable(entry):
            return now, samples, trace
        before = now
    return now, samples, trace
