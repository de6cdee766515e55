"""Clean-up of the fused masks: fill holes, drop tiny components.

Works on the model grid (n_slices, C, H, W) so the cost does not depend on the
input's resolution. Holes are filled per sagittal slice: slices are thick (3-5 mm),
so 3-D hole filling would bridge neighbouring slices that are really apart.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# SimpleITK, not scipy.ndimage: the same operations (face-connected background flood,
# 26-connected components), but importing scipy.ndimage costs about a second of CPU
# (docstring parsing at import), which the sample slider's torch-free step cannot pay.


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """`mask` (n, H, W) bool -> same with holes inside each slice's components filled
    (a hole: background not face-connected to the slice's border, as scipy's binary_fill_holes)."""
    out = np.empty_like(mask, dtype=bool)
    for i in range(mask.shape[0]):  # one call per slice, vectorised inside
        if not mask[i].any():
            out[i] = False
            continue
        filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask[i].astype(np.uint8)), fullyConnected=False,
                                     foregroundValue=1.0)
        out[i] = sitk.GetArrayViewFromImage(filled) > 0
    return out


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 3-D connected components (26-connectivity) with fewer than `min_voxels` voxels."""
    if min_voxels <= 1 or not mask.any():
        return mask.astype(bool)
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    labels = sitk.GetArrayViewFromImage(components)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def clean_masks(masks: np.ndarray, voxel_volume_mm3: float, min_component_mm3: float = 30.0) -> np.ndarray:
    """`masks` (n, C, H, W) bool on the model grid -> cleaned masks, same shape."""
    min_voxels = int(np.ceil(min_component_mm3 / max(voxel_volume_mm3, 1e-6)))
    out = np.empty_like(masks, dtype=bool)
    for c in range(masks.shape[1]):
        out[:, c] = remove_small_components(fill_holes_per_slice(masks[:, c]), min_voxels)
    return out


def to_labelmap(masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Multi-label masks (n, C, H, W) -> one labelmap (n, H, W) uint8 with values 1..C.

    Where structures overlap, the most probable one wins, so the labelmap is a faithful
    single-label view of the multi-label output.
    """
    scores = np.where(masks, probabilities, -1.0)
    best = scores.argmax(axis=1)
    any_mask = masks.any(axis=1)
    return np.where(any_mask, best + 1, 0).astype(np.uint8)
