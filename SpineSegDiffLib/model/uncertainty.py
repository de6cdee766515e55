"""Voxel-wise uncertainty from a diffusion ensemble: entropy, variance, mutual information.

Inputs are the sigmoid x0 probabilities of S samples at each of the Ts fused DDIM
steps. They are never all kept: ``RunningEnsembleSums`` accumulates, per fused step,
the sums over samples of p, p^2 and the per-sample binary entropy, which is all the
maps below need. Entropies are in bits, so every map lies in [0, 1] (1 = p is 0.5).

* ``entropy`` (the paper's map): per structure, the entropy of the sample-mean
  probability at each fused step, maximum over the fused steps.
* ``combined``: maximum over structures. Structures are separate sigmoid channels
  (multi-label), so a voxel is as uncertain as its most uncertain structure.
* ``variance``: variance of p across samples (population, so 0 with one sample),
  maximum over the fused steps; at most 0.25.
* ``mutual_information``: H(mean p) - mean over samples of H(p), i.e. the part of the
  entropy that comes from the samples disagreeing (epistemic), maximum over fused
  steps. It is >= 0 (entropy is concave) and <= ``entropy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from SpineSegDiffLib.model import levels as _levels

_LN2 = math.log(2.0)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of Bernoulli(p), elementwise; 0 at p in {0, 1}, 1 at p = 0.5."""
    p = p.clamp(0.0, 1.0)
    q = 1.0 - p
    # xlogy gives exactly 0 for p = 0, where p*log(p) would be nan
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(q, q)) / _LN2


@dataclass
class EnsembleStatistics:
    """Per fused step means over samples, each (Ts, B, C, H, W)."""

    mean_probability: torch.Tensor
    mean_square: torch.Tensor  # mean of p^2
    mean_entropy: torch.Tensor  # mean of the per-sample binary entropy
    samples: int

    @classmethod
    def from_samples(cls, probabilities: torch.Tensor) -> "EnsembleStatistics":
        """From all probabilities at once, (Ts, S, B, C, H, W); for small ensembles."""
        sums = RunningEnsembleSums(probabilities.shape[0])
        for step in range(probabilities.shape[0]):
            sums.add(step, probabilities[step])
        return sums.statistics()


class RunningEnsembleSums:
    """Accumulates sums over samples per fused step, chunk of samples by chunk."""

    def __init__(self, fused_steps: int):
        self.fused_steps = fused_steps
        self._sum_p: torch.Tensor | None = None
        self._sum_p2: torch.Tensor | None = None
        self._sum_h: torch.Tensor | None = None
        self._counts = [0] * fused_steps

    def add(self, step: int, probabilities: torch.Tensor) -> None:
        """Add probabilities (S_chunk, B, C, H, W) of fused step ``step`` (0-based)."""
        p = probabilities.float()
        if self._sum_p is None:
            shape = (self.fused_steps, *p.shape[1:])
            self._sum_p = p.new_zeros(shape)
            self._sum_p2 = p.new_zeros(shape)
            self._sum_h = p.new_zeros(shape)
        self._sum_p[step] += p.sum(0)
        self._sum_p2[step] += (p * p).sum(0)
        self._sum_h[step] += binary_entropy(p).sum(0)
        self._counts[step] += p.shape[0]

    def statistics(self) -> EnsembleStatistics:
        if self._sum_p is None or len(set(self._counts)) != 1:
            raise ValueError(f"every fused step needs the same number of samples, got {self._counts}")
        n = self._counts[0]
        return EnsembleStatistics(self._sum_p / n, self._sum_p2 / n, self._sum_h / n, n)


# uint8 levels of single samples (why: see levels.py, the torch-free home of these)
QUANT_LEVELS = _levels.QUANT_LEVELS
ENTROPY_OF_LEVEL = _levels.ENTROPY_OF_LEVEL


def quantise_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities in [0, 1] -> uint8 levels round(255 p) (on the same device)."""
    return (probabilities.float().clamp(0.0, 1.0) * QUANT_LEVELS).round_().to(torch.uint8)


def statistics_from_levels(samples: Sequence[np.ndarray], index: slice = slice(None)) -> EnsembleStatistics:
    """``levels.statistics_of_levels`` as torch tensors (same numbers)."""
    stats = _levels.statistics_of_levels(samples, index)
    return EnsembleStatistics(mean_probability=torch.from_numpy(stats.mean_probability),
                              mean_square=torch.from_numpy(stats.mean_square),
                              mean_entropy=torch.from_numpy(stats.mean_entropy), samples=stats.samples)


@dataclass
class UncertaintyMaps:
    """Uncertainty in [0, 1]; per structure maps are (B, C, H, W), ``combined`` (B, H, W)."""

    entropy: torch.Tensor
    combined: torch.Tensor
    variance: torch.Tensor | None = None
    mutual_information: torch.Tensor | None = None


def entropy_map(stats: EnsembleStatistics) -> torch.Tensor:
    """Entropy of the sample-mean probability, maximum over fused steps (B, C, H, W)."""
    return binary_entropy(stats.mean_probability).amax(0)


def variance_map(stats: EnsembleStatistics) -> torch.Tensor:
    """Variance of p across samples, maximum over fused steps (B, C, H, W)."""
    variance = (stats.mean_square - stats.mean_probability.square()).clamp_min(0.0)
    return variance.amax(0)


def mutual_information_map(stats: EnsembleStatistics) -> torch.Tensor:
    """H(mean p) - mean H(p) per fused step, maximum over fused steps (B, C, H, W)."""
    # clamp: rounding can make the difference a hair below 0 where samples agree
    information = (binary_entropy(stats.mean_probability) - stats.mean_entropy).clamp_min(0.0)
    return information.amax(0)


def combine_structures(per_structure: torch.Tensor) -> torch.Tensor:
    """One map per voxel (B, H, W): the most uncertain structure's value."""
    return per_structure.amax(1)


def uncertainty_maps(stats: EnsembleStatistics, extras: bool = True) -> UncertaintyMaps:
    """All maps; ``extras=False`` skips variance and mutual information."""
    entropy = entropy_map(stats)
    return UncertaintyMaps(
        entropy=entropy,
        combined=combine_structures(entropy),
        variance=variance_map(stats) if extras else None,
        mutual_information=mutual_information_map(stats) if extras else None,
    )
