"""Per-sample probabilities as uint8 levels, and the ensemble statistics and maps from them, without torch.

Probabilities of single samples are kept as uint8 levels q = round(255 p): a quarter of
float32's memory and disk, an error of at most 1/510 (far below the spread between
samples), and sums of q and q^2 are exact integers, so the statistics do not depend on
the order or batching in which samples were drawn or read back from the cache.

Everything here is numpy only: fresh runs and the sample cache fuse through the same
code, and lowering S from the cache runs in a process that never imports torch.
Entropies are in bits (1 at p = 0.5), as in ``uncertainty.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

QUANT_LEVELS = 255
_LN2 = math.log(2.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(p), elementwise, in p's float type; 0 at p in {0, 1}."""
    p = np.clip(p, 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        # p log p -> 0 as p -> 0; log(0) gives -inf, which np.where discards
        h = np.where(p > 0, p * np.log(p), 0.0) + np.where(q > 0, q * np.log(q), 0.0)
    return (-h / _LN2 + 0.0).astype(p.dtype, copy=False)  # + 0.0: no -0.0 at p in {0, 1}


# (256,) float32: the binary entropy of each level (from float64, then rounded once)
ENTROPY_OF_LEVEL = binary_entropy(np.arange(QUANT_LEVELS + 1, dtype=np.float64) / QUANT_LEVELS).astype(np.float32)


@dataclass
class LevelStatistics:
    """Per fused step means over samples, each (Ts, B, C, H, W) float32."""

    mean_probability: np.ndarray
    mean_square: np.ndarray | None  # mean of p^2 (None: not asked for)
    mean_entropy: np.ndarray | None  # mean of the per-sample binary entropy (None: not asked for)
    samples: int
    level_sums: np.ndarray | None = None  # sum of the levels q (uint16): mean p = sum / (255 S)


def statistics_of_levels(samples: Sequence[np.ndarray], index: slice = slice(None),
                         second_order: bool = True) -> LevelStatistics:
    """Ensemble statistics from per-sample uint8 levels, each (Ts, n, C, H, W).

    ``index`` selects slices (axis 1), so callers can bound memory by working on a few
    slices at a time. The p and p^2 sums are exact integers and the entropy sum follows
    the given order, so equal inputs give bit-identical statistics (fresh run or cache).
    ``second_order=False`` leaves out the p^2 and entropy means (only the variance and
    mutual information need them): two thirds of the work of the slider's step.
    """
    if not samples:
        raise ValueError("statistics need at least one sample")
    if len(samples) > MAX_SAMPLES_UINT16:
        raise ValueError(f"at most {MAX_SAMPLES_UINT16} samples")
    first = samples[0][:, index]
    sum_q = np.zeros(first.shape, np.uint16)  # 255 * 257 fits: exact, half of int32's memory traffic
    sum_q2 = np.zeros(first.shape, np.int32) if second_order else None
    sum_h = np.zeros(first.shape, np.float32) if second_order else None
    for sample in samples:
        q = sample[:, index]
        sum_q += q
        if second_order:
            q32 = q.astype(np.int32)
            sum_q2 += q32 * q32
            sum_h += ENTROPY_OF_LEVEL[q]
    n = len(samples)
    return LevelStatistics(mean_probability=sum_q.astype(np.float32) / np.float32(QUANT_LEVELS * n),
                           mean_square=(sum_q2.astype(np.float32) / np.float32(QUANT_LEVELS ** 2 * n)
                                        if second_order else None),
                           mean_entropy=sum_h / np.float32(n) if second_order else None, samples=n,
                           level_sums=sum_q)


MAX_SAMPLES_UINT16 = 257  # 255 * 257 = 65535: the level sums stay exact in uint16


def _entropy_of_sums(samples: int) -> np.ndarray:
    """(255 S + 1,) float32: ``binary_entropy`` of every possible mean p = sum / (255 S), computed
    exactly as for an array of means (float32 division, then the same function)."""
    sums = np.arange(QUANT_LEVELS * samples + 1).astype(np.float32)
    return binary_entropy(sums / np.float32(QUANT_LEVELS * samples))


def fuse_step_means(mean_probability: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum over the fused steps: (Ts, B, C, H, W) sample means -> (B, C, H, W) float32."""
    out = np.zeros(mean_probability.shape[1:], np.float32)
    for w, step in zip(weights.astype(np.float32), mean_probability):  # fixed order, no (Ts, ...) temporary
        out += w * step
    return out


def entropy_of_mean(stats: LevelStatistics) -> np.ndarray:
    """Entropy of the sample-mean probability, maximum over fused steps (B, C, H, W)."""
    if stats.level_sums is not None:  # a table over the possible sums: no logarithms per voxel
        return _entropy_of_sums(stats.samples)[stats.level_sums].max(axis=0)
    return binary_entropy(stats.mean_probability).max(axis=0)


def variance_of_samples(stats: LevelStatistics) -> np.ndarray:
    """Variance of p across samples (population), maximum over fused steps (B, C, H, W)."""
    return np.maximum(stats.mean_square - np.square(stats.mean_probability), 0.0).max(axis=0)


def mutual_information(stats: LevelStatistics) -> np.ndarray:
    """H(mean p) - mean H(p) per fused step, maximum over fused steps (B, C, H, W)."""
    # clamp: rounding can make the difference a hair below 0 where samples agree
    return np.maximum(binary_entropy(stats.mean_probability) - stats.mean_entropy, 0.0).max(axis=0)
