"""Uncertainty maps from ensemble statistics: entropy, variance, mutual information."""

from __future__ import annotations

import math

import pytest
import torch

from SpineSegDiffLib.model.uncertainty import (
    EnsembleStatistics, RunningEnsembleSums, binary_entropy, combine_structures, uncertainty_maps,
)


def random_probabilities(steps: int, samples: int, seed: int = 0) -> torch.Tensor:
    """(Ts, S, B=2, C=3, 16, 16), with saturated 0/1 values mixed in."""
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(steps, samples, 2, 3, 16, 16, generator=generator)
    saturated = torch.rand(p.shape, generator=generator) < 0.3
    return torch.where(saturated, p.round(), p)


def test_binary_entropy_in_bits():
    p = torch.tensor([0.0, 1.0, 0.5, 0.1, 0.9, 0.25])
    h = binary_entropy(p)
    assert h[0] == 0 and h[1] == 0 and torch.isfinite(h).all()
    assert float(h[2]) == pytest.approx(1.0)
    assert float(h[3]) == pytest.approx(float(h[4]))  # symmetric
    assert float(h[5]) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))
    grid = torch.linspace(0, 1, 1001)
    assert torch.all((binary_entropy(grid) >= 0) & (binary_entropy(grid) <= 1))


def test_single_sample_entropy_only_where_probability_is_uncertain():
    p = torch.zeros(1, 1, 1, 3, 4, 4)  # (Ts, S=1, B, C, H, W)
    p[..., 0, :2, :] = 1.0  # certain foreground
    p[..., 1, 1, 1] = 0.5  # one maximally uncertain voxel
    p[..., 2, 2, 2] = 0.99  # one nearly certain voxel
    maps = uncertainty_maps(EnsembleStatistics.from_samples(p))
    uncertain = maps.entropy > 0
    assert uncertain.sum() == 2 and uncertain[0, 1, 1, 1] and uncertain[0, 2, 2, 2]
    assert float(maps.entropy[0, 1, 1, 1]) == pytest.approx(1.0)
    assert float(maps.entropy[0, 2, 2, 2]) < 0.1
    assert torch.all(maps.variance == 0)  # one sample has no spread
    assert torch.all(maps.mutual_information == 0)  # nor any disagreement


def test_mutual_information_between_zero_and_entropy():
    stats = EnsembleStatistics.from_samples(random_probabilities(steps=3, samples=4))
    maps = uncertainty_maps(stats)
    assert torch.all(maps.mutual_information >= 0)
    assert torch.all(maps.mutual_information <= maps.entropy + 1e-6)
    assert maps.mutual_information.max() > 0.1  # random samples disagree
    assert torch.all((maps.variance >= 0) & (maps.variance <= 0.25 + 1e-6))


def test_samples_that_agree_have_no_mutual_information_or_variance():
    one = random_probabilities(steps=2, samples=1)
    stats = EnsembleStatistics.from_samples(one.repeat(1, 5, 1, 1, 1, 1))
    maps = uncertainty_maps(stats)
    assert maps.mutual_information.max() < 1e-5
    assert maps.variance.max() < 1e-6
    # the entropy itself is still there: aleatoric uncertainty does not need disagreement
    torch.testing.assert_close(maps.entropy, binary_entropy(one[:, 0]).amax(0))


def test_variance_matches_torch_population_variance():
    p = random_probabilities(steps=1, samples=6)
    maps = uncertainty_maps(EnsembleStatistics.from_samples(p))
    torch.testing.assert_close(maps.variance, p[0].var(0, unbiased=False), atol=1e-6, rtol=1e-5)


def test_entropy_is_the_maximum_over_fused_steps():
    p = torch.full((3, 2, 1, 3, 4, 4), 0.02)
    p[0, :, 0, 0, 0, 0] = 0.5  # unsure only at the first fused step
    p[2, 0, 0, 1, 3, 3], p[2, 1, 0, 1, 3, 3] = 0.3, 0.3  # unsure only at the last one
    maps = uncertainty_maps(EnsembleStatistics.from_samples(p))
    assert float(maps.entropy[0, 0, 0, 0]) == pytest.approx(1.0)
    assert float(maps.entropy[0, 1, 3, 3]) == pytest.approx(float(binary_entropy(torch.tensor(0.3))))
    assert float(maps.entropy[0, 2, 1, 1]) == pytest.approx(float(binary_entropy(torch.tensor(0.02))))


def test_combined_map_is_the_most_uncertain_structure():
    stats = EnsembleStatistics.from_samples(random_probabilities(steps=2, samples=3))
    maps = uncertainty_maps(stats, extras=False)
    assert maps.variance is None and maps.mutual_information is None
    assert maps.combined.shape == (2, 16, 16)
    assert torch.all(maps.combined.unsqueeze(1) >= maps.entropy)
    assert torch.all((maps.combined.unsqueeze(1) == maps.entropy).any(1))
    torch.testing.assert_close(combine_structures(maps.entropy), maps.combined)


def test_running_sums_in_chunks_equal_all_at_once():
    p = random_probabilities(steps=3, samples=5)
    sums = RunningEnsembleSums(3)
    for start, stop in ((0, 2), (2, 4), (4, 5)):
        for step in range(3):
            sums.add(step, p[step, start:stop])
    chunked, whole = sums.statistics(), EnsembleStatistics.from_samples(p)
    assert chunked.samples == whole.samples == 5
    torch.testing.assert_close(chunked.mean_probability, p.mean(1))
    torch.testing.assert_close(chunked.mean_square, whole.mean_square)
    torch.testing.assert_close(chunked.mean_entropy, binary_entropy(p).mean(1))


def test_uneven_step_counts_are_refused():
    sums = RunningEnsembleSums(2)
    sums.add(0, torch.rand(2, 1, 3, 4, 4))
    with pytest.raises(ValueError, match="same number of samples"):
        sums.statistics()
