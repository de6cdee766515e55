"""model.calibration: Platt scaling per structure fitted by weighted BCE."""

from __future__ import annotations

import torch

from SpineSegDiffLib.model.calibration import fit_platt, weighted_bce


def _synthetic(true_scale, true_bias, n: int = 20000, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(true_scale), n, generator=gen) * 3
    p = torch.sigmoid(logits * torch.tensor(true_scale)[:, None] + torch.tensor(true_bias)[:, None])
    targets = (torch.rand(p.shape, generator=gen) < p).float()
    return logits, targets


def test_fit_recovers_the_scale_and_bias_that_made_the_labels():
    logits, targets = _synthetic([2.0, 0.5], [-1.0, 0.7])
    weights = torch.ones_like(logits)
    scale, bias = fit_platt(logits, targets, weights)
    torch.testing.assert_close(scale, torch.tensor([2.0, 0.5]), atol=0.15, rtol=0)
    torch.testing.assert_close(bias, torch.tensor([-1.0, 0.7]), atol=0.15, rtol=0)
    before = weighted_bce(logits, targets, weights, torch.ones(2), torch.zeros(2))
    after = weighted_bce(logits, targets, weights, scale, bias)
    assert all(a < b for a, b in zip(after, before))


def test_unlabelled_structures_and_weights():
    logits, targets = _synthetic([2.0, 2.0], [0.0, 0.0])
    weights = torch.ones_like(logits)
    weights[1] = 0  # structure 1 is labelled nowhere: left as it was
    scale, bias = fit_platt(logits, targets, weights)
    assert scale[1] == 1.0 and bias[1] == 0.0 and abs(scale[0] - 2.0) < 0.2
    # weights select the voxels that count: scoring only half of them gives that half's BCE
    half = torch.zeros_like(logits)
    half[:, ::2] = 1
    ones, zeros = torch.ones(2), torch.zeros(2)
    expected = weighted_bce(logits[:, ::2], targets[:, ::2], torch.ones_like(logits[:, ::2]), ones, zeros)
    torch.testing.assert_close(torch.tensor(weighted_bce(logits, targets, half, ones, zeros)), torch.tensor(expected))
