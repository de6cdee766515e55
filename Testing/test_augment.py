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
