"""Border-weighted loss (training/boundary.py): which pixels get the factor, partial labels
kept, the option's checks, and what it does to the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SpineSegDiffLib.core.labels import BY_KEY
from SpineSegDiffLib.training.boundary import border_pixels, emphasise_borders

VERTEBRA, DISC = BY_KEY["vertebrae"].value, BY_KEY["discs"].value


def _body_only_case():
    """4 slices of 40x30: two bodies (rows 10-17 and 22-29, columns 5-11) on slices 1-2."""
    from SpineSegDiffLib.training.data import GridCase

    labels = np.zeros((4, 40, 30), np.uint8)
    labels[1:3, 10:18, 5:12] = VERTEBRA
    labels[1:3, 22:30, 5:12] = VERTEBRA
    image = np.random.default_rng(0).random(labels.shape, np.float32)
    return GridCase("c", "p", "real:VB2", image, labels, np.array([False, True, False]), body_only=True,
                    spacing_mm=(2.0, 2.0, 2.0))


def test_border_pixels_are_both_sides_of_every_label_change_and_nothing_else():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 2:4, 2:4] = VERTEBRA
    border = border_pixels(labels)[0]
    square = np.zeros((6, 6), bool)
    square[2:4, 2:4] = True
    ring = np.zeros((6, 6), bool)
    ring[1:5, 2:4] = ring[2:4, 1:5] = True  # the 4-neighbours outside, the square inside
    assert (border == ring).all() and border[square].all()
    assert not border_pixels(np.full((2, 5, 5), DISC, np.uint8)).any()


def test_the_factor_multiplies_border_weights_keeps_open_pixels_open_and_leaves_the_input_alone():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 2:4, 2:4] = VERTEBRA
    weights = np.ones((1, 3, 6, 6), np.uint8)
    weights[0, 1, :, 4:] = 0  # a structure the labels leave open in these columns
    before = weights.copy()
    out = emphasise_borders(labels, weights, 4)
    border = border_pixels(labels)[0]
    assert (weights == before).all()
    for c in range(3):
        expected = before[0, c] * np.where(border, 4, 1)
        assert (out[0, c] == expected).all()
    assert (out[0, 1, :, 4:] == 0).all()
    assert out.dtype == np.uint8


@pytest.mark.parametrize("factor", [0, 256, 2.5])
def test_a_factor_outside_1_to_255_or_not_whole_is_refused(factor):
    with pytest.raises(ValueError, match="whole number from 1 to 255"):
        emphasise_borders(np.zeros((1, 2, 2), np.uint8), np.ones((1, 3, 2, 2), np.uint8), factor)


def test_training_slices_weight_the_body_disc_space_border_and_not_the_rest():
    from SpineSegDiffLib.training.targets import SliceSet

    case = _body_only_case()
    plain = SliceSet.from_cases([case], 1, 2.0)
    heavy = SliceSet.from_cases([case], 1, 2.0, boundary_weight=3)
    assert (plain.labels == heavy.labels).all() and set(np.unique(plain.weights)) == {0, 1}
    vertebra = 1
    # the disc space between the bodies is filled in as disc; the rows either side of its
    # border with the lower edge of the upper body carry 3x the weight in every channel
    assert (heavy.labels[1, 18:22, 5:12] == DISC).all()
    assert (heavy.weights[1, :, 17:19, 6:11] == 3).all()
    assert (heavy.weights[1, :, 13:15, 6:11] == plain.weights[1, :, 13:15, 6:11]).all()  # inside a body
    ratio = heavy.weights.astype(int) - plain.weights.astype(int)
    assert ((ratio == 0) | (ratio == 2 * plain.weights)).all()
    assert not heavy.weights[1, vertebra][plain.weights[1, vertebra] == 0].any()


def test_border_weight_raises_the_loss_share_of_border_pixels():
    from SpineSegDiffLib.model.diffusion import segmentation_loss

    target = torch.zeros(1, 3, 8, 8)
    target[0, 1, :4] = 1
    labels = (target[0, 1].numpy() * VERTEBRA).astype(np.uint8)[None]
    logits = torch.where(target > 0, 4.0, -4.0)
    logits[0, 1, 3] = -1.0  # the row at the border is wrong
    ones = np.ones((1, 3, 8, 8), np.uint8)
    plain = segmentation_loss(logits, target, torch.from_numpy(ones).float())["bce"]
    heavy = segmentation_loss(logits, target, torch.from_numpy(emphasise_borders(labels, ones, 5)).float())["bce"]
    assert float(heavy) > 1.5 * float(plain)


def test_boundary_weight_option_is_checked(tmp_path):
    from SpineSegDiffLib.core.errors import InputError
    from SpineSegDiffLib.training.config import config_from_values

    assert config_from_values({"boundary_weight": 3}).boundary_weight == 3
    for bad in (0, 300):
        with pytest.raises(InputError, match="--boundary-weight must be a whole number from 1"):
            config_from_values({"boundary_weight": bad})
    with pytest.raises(InputError, match="--boundary-weight should be a whole number"):
        config_from_values({"boundary_weight": 2.5})
