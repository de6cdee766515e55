"""Per-structure summary of a result: volume, mean uncertainty, where it peaks."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.grid.geometry import ModelGrid
from SpineSegDiffLib.grid.map_back import BoxedArray, nonzero_box
from SpineSegDiffLib.inference.probability_entropy import probability_entropy


def structure_summary(image: sitk.Image, labels: BoxedArray, grid: ModelGrid, grid_labels: np.ndarray,
                      grid_probabilities: np.ndarray) -> dict:
    """Per structure: volume, mean uncertainty on and around it, and where it peaks.

    ``labels``: the labelmap's voxels inside its box (0 outside), which give the volume;
    ``grid_labels`` (n, H, W) and ``grid_probabilities`` (C, n, H, W): the labelmap and the
    fused probabilities on the model grid. The uncertainty is their entropy
    (``probability_entropy``) read on the grid, not on the 10 M+ voxels it is mapped onto,
    which keeps the sample slider's step short. The mean is taken over the structure
    dilated by one grid voxel, so boundary doubt (where most of it lives) counts; the peak
    is the most uncertain point of that region after light smoothing (sigma one grid
    voxel), so one noisy voxel does not decide where the user is sent.
    """
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    out = {}
    for s in STRUCTURES:
        volume = np.count_nonzero(labels.values == s.value)
        entry = {"label": s.value, "name": s.name, "volume_ml": round(float(volume) * voxel_ml, 3),
                 "mean_uncertainty": 0.0, "peak_uncertainty_lps": None}
        on_grid = grid_labels == s.value
        box = nonzero_box(on_grid)
        if volume and box is not None:
            # the dilation's reach (1) and the Gaussian's (4 sigma): the same numbers as the whole grid
            grown = tuple(slice(max(b.start - 5, 0), min(b.stop + 5, n)) for b, n in zip(box, on_grid.shape))
            u = probability_entropy(grid_probabilities[(s.value - 1, *grown)])
            region = _dilate_faces(on_grid[grown])
            entry["mean_uncertainty"] = round(float(u[region].mean()), 5)
            z, y, x = (int(i) + b.start for i, b in zip(_peak_of_smoothed(u, region), grown))
            entry["peak_uncertainty_lps"] = [round(v, 3) for v in
                                             grid.grid_image.TransformIndexToPhysicalPoint((x, y, z))]
        out[s.key] = entry
    return out


# numpy, not scipy.ndimage (binary_dilation, gaussian_filter): the same numbers, without
# scipy's import (about a second of CPU), which the sample slider's step cannot pay


def _dilate_faces(mask: np.ndarray) -> np.ndarray:
    """One step of binary dilation with the face-connected cross (scipy's default), outside = 0."""
    out = mask.copy()
    for axis in range(mask.ndim):
        lead = [slice(None)] * mask.ndim
        trail = [slice(None)] * mask.ndim
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= mask[tuple(trail)]
        out[tuple(trail)] |= mask[tuple(lead)]
    return out


_GAUSS_RADIUS = 4  # scipy's truncate=4.0 at sigma 1
_GAUSS = np.exp(-0.5 * np.arange(-_GAUSS_RADIUS, _GAUSS_RADIUS + 1) ** 2)
_GAUSS /= _GAUSS.sum()


def _taps(padded: np.ndarray, axis: int, n: int) -> np.ndarray:
    """sum_k w_k padded[k : k + n] along ``axis``, in a fixed order (so every caller gets the same bits)."""
    window = [slice(None)] * padded.ndim
    shape = list(padded.shape)
    shape[axis] = n
    total = np.zeros(shape)
    for k, w in enumerate(_GAUSS):  # views, not copies
        window[axis] = slice(k, k + n)
        total += w * padded[tuple(window)]
    return total


_SLAB_PLANES = 16  # planes per slab: temporaries of a few MB instead of copies of the whole box in float64


def _peak_of_smoothed(values: np.ndarray, region: np.ndarray) -> tuple[int, ...]:
    """Index of the maximum of the Gaussian-smoothed (sigma 1 voxel, borders mirrored as
    scipy's mode 'reflect') ``values`` inside ``region``, the first in C order on ties.

    Smoothed slab by slab of planes along axis 0, and in each slab only in the rows and
    columns of the region's box there (a structure fills a fraction of its bounding box;
    slabs without region are skipped). Each piece reads the Gaussian's reach of input
    voxels, mirrored at the array's ends (the index maps of np.pad 'symmetric'), and sums
    the taps axis by axis in the same order as smoothing the whole array at once: the
    same numbers, bit for bit (``Testing/test_summary.py``).
    """
    mirrored = [np.pad(np.arange(n), _GAUSS_RADIUS, mode="symmetric") for n in values.shape]
    best_value, best_index = None, None
    for start in range(0, values.shape[0], _SLAB_PLANES):
        stop = min(values.shape[0], start + _SLAB_PLANES)
        inside = region[start:stop]
        rows = np.flatnonzero(inside.any(axis=(0, 2)))
        if not rows.size:
            continue
        cols = np.flatnonzero(inside.any(axis=(0, 1)))
        out = [slice(start, stop), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)]
        reads = [m[o.start:o.stop + 2 * _GAUSS_RADIUS] for m, o in zip(mirrored, out)]
        smooth = values[np.ix_(*reads)].astype(np.float64)
        for axis, o in enumerate(out):
            smooth = _taps(smooth, axis, o.stop - o.start)
        scores = np.where(region[tuple(out)], smooth.astype(np.float32), np.float32(-1.0))
        flat = int(np.argmax(scores))
        local = np.unravel_index(flat, scores.shape)
        index = tuple(int(i) + o.start for i, o in zip(local, out))
        if best_value is None or scores.flat[flat] > best_value:  # strictly: the first maximum wins
            best_value, best_index = scores.flat[flat], index
    return best_index
