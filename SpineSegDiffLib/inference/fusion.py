"""Fusing drawn samples into probabilities and uncertainty maps on the model grid (no network, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SpineSegDiffLib.model import levels
from SpineSegDiffLib.model.diffusion_config import fusion_weight_array


@dataclass
class GridPrediction:
    """Everything the ensemble produced, on the model grid."""

    probabilities: np.ndarray  # (n, C, H, W) fused, float32
    # (n, C, H, W) the paper's per-structure uncertainty in [0, 1] (entropy of the sample mean, maximum
    # over the fused steps): what ``auto_samples`` watches; the outputs show ``probability_entropy``'s
    entropy: np.ndarray | None
    variance: np.ndarray | None = None  # (n, C, H, W)
    mutual_information: np.ndarray | None = None  # (n, C, H, W)
    network_seconds: float = 0.0
    network_evaluations: int = 0
    samples_from_cache: int = 0
    sample_levels: list[np.ndarray] | None = None  # each sample's (Ts, n, C, H, W) levels, for per-sample masks
    auto_trace: list[dict] | None = None  # --samples auto: the sizes tried and their changes (auto_samples.py)


# slices fused at a time: bounds the int32/float32 temporaries of the statistics
_FUSE_SLICES = 8


def fuse_samples(samples: list[np.ndarray], fused_steps: int, extras: bool = False,
                 entropy: bool = True) -> GridPrediction:
    """Fusion and uncertainty from per-sample levels (each (Ts, n, C, H, W) uint8), no network.

    The same function serves fresh and cached samples, so both give identical results;
    numpy only, so re-fusing cached samples never waits for torch to import.
    ``entropy=False`` leaves ``entropy`` None (no output reads it; the slider's step skips it).
    """
    _, n, c, h, w = samples[0].shape
    out = GridPrediction(np.zeros((n, c, h, w), np.float32), np.zeros((n, c, h, w), np.float32) if entropy else None)
    if extras:
        out.variance = np.zeros_like(out.probabilities)
        out.mutual_information = np.zeros_like(out.probabilities)
    weights = fusion_weight_array(fused_steps)
    for start in range(0, n, _FUSE_SLICES):
        part = slice(start, min(n, start + _FUSE_SLICES))
        stats = levels.statistics_of_levels(samples, part, second_order=extras)
        out.probabilities[part] = levels.fuse_step_means(stats.mean_probability, weights)
        if entropy:
            out.entropy[part] = levels.entropy_of_mean(stats)
        if extras:
            out.variance[part] = levels.variance_of_samples(stats)
            out.mutual_information[part] = levels.mutual_information(stats)
    return out
