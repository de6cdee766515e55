"""training.augment: the same spatial transform for image and masks; intensity changes only the image."""

from __future__ import annotations

import torch

from SpineSegDiffLib.training.augment import random_affine, random_intensity


def _batch():
    images = torch.zeros(4, 1, 48, 48)
    images[:, :, 12:36, 16:30] = 1.0
    masks = torch.zeros(4, 3, 48, 48)
    masks[:, 1, 12:36, 16:30] = 1.0  # the mask is exactly the bright block
    weights = torch.ones(4, 3, 48, 48)
    return images, masks, weights


def test_affine_moves_image_and_masks_together_and_keeps_masks_binary():
    images, masks, weights = _batch()
    out_i, out_m, out_w = random_affine(images, masks, weights, torch.Generator().manual_seed(1))
    assert out_i.shape == images.shape and out_m.shape == masks.shape and out_w.shape == weights.shape
    assert set(out_m.unique().tolist()) <= {0.0, 1.0} and set(out_w.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_m, masks), "some transform should have happened"
    agree = ((out_i > 0.5) == (out_m[:, 1:2] > 0.5)).float().mean()
    assert agree > 0.97  # differences only along the block's edge (bilinear vs nearest)
    assert out_m[:, 0].sum() == 0 and out_m[:, 2].sum() == 0
    # the same generator state gives the same transform
    again = random_affine(images, masks, weights, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], out_i) and torch.equal(again[1], out_m)
    assert random_affine(images, masks, None, torch.Generator().manual_seed(1))[2] is None


def test_intensity_changes_values_not_geometry():
    images, _, _ = _batch()
    out = random_intensity(images, torch.Generator().manual_seed(2))
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, images)
    inside, outside = out[:, :, 12:36, 16:30].mean(), out[:, :, :10, :10].mean()
    assert inside > outside + 0.3, "the structure stays brighter than the background"
    assert torch.equal(random_intensity(images, torch.Generator().manual_seed(2)), out)
