"""Training augmentation: MONAI intensity transforms and the batched affine, on real phantom slices."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SpineSegDiffLib.data.phantom import generate_case
from SpineSegDiffLib.training.augment import random_affine, random_intensity


@pytest.fixture(scope="module")
def batch():
    """Four 2.5D items (a sagittal slice with its two neighbours) from a phantom, ~[0, 1]."""
    case = generate_case(5, 0, ("t2",))
    image = sitk.GetArrayFromImage(case.images["t2"]).astype(np.float32)
    image /= np.percentile(image, 99.5)
    k = case.metadata["mid_sagittal_slice"]
    items = [np.moveaxis(image[:96, :96, j - 1:j + 2], 2, 0) for j in (k - 2, k - 1, k, k + 1)]
    return torch.from_numpy(np.stack(items))


def test_intensity_is_deterministic_for_a_generator_and_differs_otherwise(batch):
    a = random_intensity(batch, torch.Generator().manual_seed(3))
    b = random_intensity(batch, torch.Generator().manual_seed(3))
    c = random_intensity(batch, torch.Generator().manual_seed(4))
    assert type(a) is torch.Tensor and a.shape == batch.shape and a.dtype == batch.dtype
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, batch)  # something was applied
    # items of one batch get their own draws: their change from the input differs
    change = (a - batch).flatten(1).abs().mean(1)
    assert change.unique().numel() == batch.shape[0]


def test_intensity_keeps_the_three_channels_consistent(batch):
    """The 2.5D neighbours get the same contrast change (not three independent ones)."""
    same = batch[:, 1:2].repeat(1, 3, 1, 1)
    out = random_intensity(same, torch.Generator().manual_seed(9))
    # voxel noise differs between channels, the contrast does not: the channels' means agree
    means = out.flatten(2).mean(2)
    assert torch.allclose(means[:, 0], means[:, 1], rtol=0.05, atol=0.01)
    assert torch.allclose(means[:, 0], means[:, 2], rtol=0.05, atol=0.01)


def test_affine_moves_image_and_mask_together(batch):
    mask = (batch[:, 1:2] > batch[:, 1:2].mean()).float()
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    image_a, mask_a, _ = random_affine(batch, mask, None, gen_a)
    image_b, mask_b, _ = random_affine(batch, mask, None, gen_b)
    assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    assert set(mask_a.unique().tolist()) <= {0.0, 1.0}  # nearest: masks stay binary
    # the warped mask still marks the bright voxels of the warped image
    inside = image_a[:, 1:2][mask_a > 0].mean()
    outside = image_a[:, 1:2][(mask_a == 0) & (image_a[:, 1:2] > 0)].mean()
    assert inside > outside



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
