"""inference.postprocess: holes filled per sagittal slice, small 3-D components dropped, labelmap view."""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.inference.postprocess import (clean_masks, fill_holes_per_slice, remove_small_components,
                                                   to_labelmap)


def test_holes_are_filled_within_a_slice_not_across_slices():
    mask = np.zeros((3, 9, 9), bool)
    mask[0, 2:7, 2:7] = mask[2, 2:7, 2:7] = True
    mask[0, 3:6, 3:6] = mask[2, 3:6, 3:6] = False  # rings in slices 0 and 2, slice 1 empty
    filled = fill_holes_per_slice(mask)
    assert filled[0, 2:7, 2:7].all() and filled[2, 2:7, 2:7].all()
    assert not filled[1].any(), "nothing is bridged between slices"
    open_ring = np.zeros((1, 9, 9), bool)
    open_ring[0, 2:7, 2:7] = True
    open_ring[0, 3:6, 3:6] = False
    open_ring[0, 4, 6] = False  # a gap to the outside: not a hole
    assert not fill_holes_per_slice(open_ring)[0, 4, 4]


def test_small_components_are_dropped_with_26_connectivity():
    mask = np.zeros((6, 10, 10), bool)
    mask[0:3, 0:3, 0:3] = True  # 27 voxels
    mask[5, 9, 9] = True  # 1 voxel
    mask[4, 8, 8] = True  # touches the previous one diagonally (26-connected): 2 voxels together
    kept = remove_small_components(mask, min_voxels=3)
    assert kept[0:3, 0:3, 0:3].all() and not kept[5, 9, 9] and not kept[4, 8, 8]
    assert remove_small_components(mask, min_voxels=2)[5, 9, 9]  # the diagonal pair has 2 voxels
    assert np.array_equal(remove_small_components(mask, min_voxels=1), mask)


def test_clean_masks_converts_the_volume_limit_to_voxels_per_channel():
    masks = np.zeros((4, 2, 8, 8), bool)
    masks[:, 0, 1:5, 1:5] = True  # 64 voxels
    masks[0, 1, 0, 0] = True  # 1 voxel in channel 1
    cleaned = clean_masks(masks, voxel_volume_mm3=8.0, min_component_mm3=30.0)  # 30 mm³ = 4 voxels
    assert cleaned[:, 0].sum() == 64 and not cleaned[:, 1].any()
    assert clean_masks(masks, voxel_volume_mm3=40.0, min_component_mm3=30.0)[0, 1, 0, 0]  # 1 voxel is 40 mm³



def test_clean_masks_in_the_structures_box_equals_scipy_on_the_whole_grid():
    """The clean-up works in each structure's box: the result must be the whole grid's, holes
    and components touching the grid's border or the box's edge included (scipy as reference)."""
    from scipy import ndimage

    rng = np.random.default_rng(11)
    for trial in range(12):
        masks = np.zeros((7, 3, 40, 48), bool)
        for c in range(3):
            blobs = ndimage.gaussian_filter(rng.random((7, 40, 48)), (0.5, 2.0, 2.0)) > 0.53 + 0.01 * c
            if trial % 3 == 0:  # confined to a corner of the grid: the box touches the border
                blobs[:, 12:, 15:] = False
            elif trial % 3 == 1:  # in the middle, with rings whose holes the clean-up fills
                blobs[:, :8] = blobs[:, 32:] = False
                blobs[:, :, :6] = False
                blobs[2 + c, 15:25, 20:30] = True
                blobs[2 + c, 17:23, 22:28] = False
            masks[:, c] = blobs
        expected = np.stack([ndimage.binary_fill_holes(s) for s in masks.reshape(-1, 40, 48)]).reshape(masks.shape)
        for c in range(3):
            labels, _ = ndimage.label(expected[:, c], structure=np.ones((3, 3, 3)))
            sizes = np.bincount(labels.ravel())
            expected[:, c] &= (sizes >= 5)[labels]
        before = masks.copy()
        np.testing.assert_array_equal(clean_masks(masks, voxel_volume_mm3=1.0, min_component_mm3=5.0), expected)
        np.testing.assert_array_equal(masks, before)
    assert not clean_masks(np.zeros((2, 3, 8, 8), bool), 1.0).any()

def test_labelmap_takes_the_most_probable_structure_where_they_overlap():
    masks = np.zeros((1, 3, 1, 3), bool)
    probabilities = np.zeros((1, 3, 1, 3), np.float32)
    masks[0, :, 0, 0] = [True, True, False]
    probabilities[0, :, 0, 0] = [0.6, 0.9, 0.99]  # channel 2 is more probable but not in the mask
    masks[0, 2, 0, 1] = True
    probabilities[0, 2, 0, 1] = 0.7
    labels = to_labelmap(masks, probabilities)
    assert labels.dtype == np.uint8 and labels.tolist() == [[[2, 3, 0]]]
