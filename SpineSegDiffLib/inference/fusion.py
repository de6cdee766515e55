"""Fusing drawn samples into probabilities and uncertainty maps on the model grid (no network)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass



@dataclass
class GridPrediction:
    """Everything the ensemble produced, on the model grid."""

    probabilities: np.ndarray  # (n, C, H, W) fused, float32
    entropy: np.ndarray  # (n, C, H, W) per-structure uncertainty in [0, 1]
    variance: np.ndarray | None = None  # (n, C, H, W)
    mutual_information: np.ndarray | None = None  # (n, C, H, W)
    network_seconds: float = 0.0
    network_evaluations: int = 0
    samples_from_cache: int = 0
    sample_levels: list[np.ndarray] | None = None  # each sample's (Ts, n, C, H, W) levels, for per-sample masks


# slices fused at a time: bounds the int32/float32 temporaries of the statistics
_FUSE_SLICES = 8


def fuse_samples(samples: list[np.ndarray], fused_steps: int, extras: bool = False) -> GridPrediction:
    """Fusion and uncertainty from per-sample levels (each (Ts, n, C, H, W) uint8), no network.

    The same function serves fresh and cached samples, so both give identical results.
    """
    from SpineSegDiffLib.model.diffusion import fuse_steps, fusion_weights
    from SpineSegDiffLib.model.uncertainty import (
        statistics_from_levels,
        uncertainty_maps,
    )

    _, n, c, h, w = samples[0].shape
    out = GridPrediction(np.zeros((n, c, h, w), np.float32), np.zeros((n, c, h, w), np.float32))
    if extras:
        out.variance = np.zeros_like(out.probabilities)
        out.mutual_information = np.zeros_like(out.probabilities)
    weights = fusion_weights(fused_steps)
    for start in range(0, n, _FUSE_SLICES):
        part = slice(start, min(n, start + _FUSE_SLICES))
        stats = statistics_from_levels(samples, part)
        out.probabilities[part] = fuse_steps(stats.mean_probability, weights).numpy()
        maps = uncertainty_maps(stats, extras)
        out.entropy[part] = maps.entropy.numpy()
        if extras:
            out.variance[part] = maps.variance.numpy()
            out.mutual_information[part] = maps.mutual_information.numpy()
    return out
