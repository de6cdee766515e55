"""The vertebra size prior on body-only slices (training/size_prior.py): budgets, the
penalty, its trip through a batch and the augmentation, and what it does to training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SpineSegDiffLib.training.size_prior import (
    VERTEBRA_CHANNEL, prior_channel, size_prior_penalty, slice_budgets, split_prior_channel,
)


def _body_only_labels() -> np.ndarray:
    """4 slices of 40x30: two bodies (label 2) on slices 1-2, rows 10-17 and 22-29."""
    labels = np.zeros((4, 40, 30), np.uint8)
    labels[1:3, 10:18, 5:12] = 2
    labels[1:3, 22:30, 5:12] = 2
    labels[2, 22:30, 12] = 2  # one body a column deeper on one slice
    return labels


def test_budget_is_ratio_times_the_mean_body_area_per_body_slice_over_the_span():
    labels = _body_only_labels()
    budget, band = slice_budgets(labels, True, 1.5)
    per_slice = (labels == 2).sum(axis=(1, 2))
    expected = 1.5 * per_slice.sum() / 2
    assert np.allclose(budget, expected)  # every slice, also those without a body
    assert (band == (10, 30)).all()


@pytest.mark.parametrize("body_only, ratio", [(False, 1.5), (True, 0.0)])
def test_no_budget_for_fully_labelled_cases_or_ratio_zero(body_only, ratio):
    budget, _ = slice_budgets(_body_only_labels(), body_only, ratio)
    assert not budget.any()


def test_prior_channel_holds_the_budget_in_the_span_rows_only():
    channel = prior_channel(torch.tensor([5.0, 0.0]), torch.tensor([[2, 4], [0, 6]]), 6, 3)
    assert channel.shape == (2, 1, 6, 3)
    assert (channel[0, 0, 2:4] == 5).all() and (channel[0, 0, :2] == 0).all() and (channel[0, 0, 4:] == 0).all()
    assert not channel[1].any()


def test_penalty_is_zero_within_the_budget_and_pushes_only_undecided_span_pixels_down():
    weights = torch.ones(1, 3, 8, 8)
    weights[0, VERTEBRA_CHANNEL, 2:6, 4:8] = 0  # undecided: 16 pixels
    region = torch.zeros(1, 8, 8)
    region[0, 1:7] = 4.0  # budget 4 pixels in rows 1..6
    logits = torch.full((1, 3, 8, 8), -20.0)
    logits[0, VERTEBRA_CHANNEL, 2:4, 4:6] = 20.0  # 4 pixels of vertebra: at the budget
    assert float(size_prior_penalty(logits, weights, region)) == pytest.approx(0.0, abs=1e-6)

    logits = torch.zeros(1, 3, 8, 8, requires_grad=True)  # p = 0.5 everywhere: 8 undecided px
    penalty = size_prior_penalty(logits, weights, region)
    assert float(penalty.detach()) == pytest.approx(((8 - 4) / 4) ** 2)
    penalty.backward()
    grad = logits.grad[0, VERTEBRA_CHANNEL]
    assert (grad[2:6, 4:8] > 0).all()  # descent lowers the undecided pixels' vertebra logits
    decided = torch.ones(8, 8, dtype=torch.bool)
    decided[2:6, 4:8] = False
    assert (grad[decided] == 0).all() and (logits.grad[0, [0, 2]] == 0).all()


def test_no_slice_with_a_budget_gives_zero_with_a_graph():
    logits = torch.zeros(2, 3, 4, 4, requires_grad=True)
    penalty = size_prior_penalty(logits, torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))
    assert float(penalty.detach()) == 0.0
    penalty.backward()


def test_the_prior_travels_through_a_batch_and_the_augmentation():
    from SpineSegDiffLib.training.augment import random_affine
    from SpineSegDiffLib.training.data import GridCase
    from SpineSegDiffLib.training.loop import _BatchSource
    from SpineSegDiffLib.training.targets import SliceSet

    labels = _body_only_labels()
    case = GridCase("c", "p", "real:VB2", np.random.default_rng(0).random(labels.shape, np.float32), labels,
                    np.array([False, True, False]), body_only=True, spacing_mm=(2.0, 2.0, 2.0))
    plain = SliceSet.from_cases([case], 1, 2.0)
    with_prior = SliceSet.from_cases([case], 1, 2.0, size_prior_ratio=1.5)
    assert plain.prior_budget is None
    image, mask, weights = _BatchSource(with_prior, torch.device("cpu")).get(np.arange(4))
    assert weights.shape[1] == 4 and image.shape[0] == 4
    _, _, moved = random_affine(image, mask, weights, torch.Generator().manual_seed(3))
    loss_weights, region = split_prior_channel(moved, 3)
    assert loss_weights.shape[1] == 3
    # nearest-neighbour resampling keeps the budget's value exactly
    assert set(np.unique(region.numpy())) <= {0.0, float(with_prior.prior_budget[0])}
    _, _, unchanged = _BatchSource(plain, torch.device("cpu")).get(np.arange(4))
    assert unchanged.shape[1] == 3


def _train(size_prior_weight: float) -> float:
    """Train a tiny denoiser on one image twice labelled: once fully (body + posterior
    blob are vertebra), once body-only (the blob undecided, budget below the blob's
    area). Returns the predicted vertebra area on the blob."""
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.network import TINY_FEATURES, DiffUNet, NetworkConfig
    from SpineSegDiffLib.training.stages import build_stage

    torch.manual_seed(0)
    model = DiffUNet(NetworkConfig(features=TINY_FEATURES, time_embed_dim=16))
    body = torch.zeros(32, 32)
    body[8:24, 4:12] = 1
    blob = torch.zeros(32, 32)
    blob[8:24, 18:26] = 1
    image = (0.7 * body + 0.7 * blob)[None, None].repeat(2, 1, 1, 1)
    mask = torch.zeros(2, 3, 32, 32)
    mask[0, VERTEBRA_CHANNEL] = body + blob
    mask[1, VERTEBRA_CHANNEL] = body
    weights = torch.zeros(2, 3, 32, 32)
    weights[:, VERTEBRA_CHANNEL] = 1
    weights[1, VERTEBRA_CHANNEL] = 1 - blob  # the body-only case leaves the blob open
    region = torch.zeros(2, 1, 32, 32)
    region[1, 0, 8:24] = 0.25 * float(body.sum())
    stage = build_stage("diffusion", model, DiffusionConfig(), None, size_prior_weight)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = stage.loss(model, image, mask, torch.cat([weights, region], 1), generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        x0 = model(image[1:], torch.zeros(1, 3, 32, 32), torch.tensor([999]))
    return float((torch.sigmoid(x0[0, VERTEBRA_CHANNEL]) * blob).sum())


def test_training_with_the_prior_paints_less_of_the_undecided_blob():
    without, with_prior = _train(0.0), _train(1.0)
    assert with_prior < 0.7 * without


@pytest.mark.parametrize("stage", ["presegmenter", "diffusion-from-presegmentation"])
def test_the_presegmenter_stages_take_the_prior_channel_and_add_the_penalty(stage):
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.network import TINY_FEATURES, DiffUNet, NetworkConfig
    from SpineSegDiffLib.model.presegmenter import PresegmentationConfig, attach_presegmenter
    from SpineSegDiffLib.training.stages import build_stage

    torch.manual_seed(0)
    model = DiffUNet(NetworkConfig(features=TINY_FEATURES, time_embed_dim=16))
    attach_presegmenter(model)
    image = torch.rand(2, 1, 32, 32)
    mask = torch.zeros(2, 3, 32, 32)
    weights = torch.zeros(2, 3, 32, 32)  # all undecided: every painted pixel counts
    region = torch.full((2, 1, 32, 32), 1.0)  # a one-pixel budget
    totals = []
    for prior_weight in (0.0, 1.0):
        built = build_stage(stage, model, DiffusionConfig(), PresegmentationConfig(t_max=200), prior_weight)
        totals.append(float(built.loss(model, image, mask, torch.cat([weights, region], 1),
                                       torch.Generator().manual_seed(0)).detach()))
    assert totals[1] > totals[0]
