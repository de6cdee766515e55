"""Per-structure summary of a result: volume, mean uncertainty, where it peaks."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.grid.map_back import BoxedArray


def structure_summary(image: sitk.Image, masks: BoxedArray, uncertainty: BoxedArray) -> dict:
    """Per structure: volume, mean uncertainty on and around it, and where it peaks.

    ``masks`` (C, box) bool and ``uncertainty`` (C, box) float32 hold the input grid's
    values inside their boxes (False / 0 outside). The mean is taken over the structure
    dilated by one voxel, so boundary doubt (where most of it lives) counts; the peak is
    the most uncertain point of that region after light smoothing, so one noisy voxel
    does not decide where the user is sent.
    """
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    out = {}
    for s in STRUCTURES:
        in_box = masks.values[s.value - 1]
        entry = {"label": s.value, "name": s.name, "volume_ml": round(float(np.count_nonzero(in_box)) * voxel_ml, 3),
                 "mean_uncertainty": 0.0, "peak_uncertainty_lps": None}
        if in_box.any():
            # work inside the structure's bounding box plus the reach of the dilation (1) and
            # of the Gaussian (4 sigma = 4 voxels): the same numbers, a fraction of the volume
            local = _box_around(in_box, margin=0)
            grown = tuple(slice(max(b.start + o.start - 5, 0), min(b.stop + o.start + 5, n))
                          for b, o, n in zip(local, masks.box, masks.shape))
            m = BoxedArray(in_box, masks.box, masks.shape).crop(grown)
            u = BoxedArray(uncertainty.values[s.value - 1], uncertainty.box, uncertainty.shape).crop(grown)
            region = _dilate_faces(m)
            entry["mean_uncertainty"] = round(float(u[region].mean()), 5)
            smooth = _gaussian_sigma1(u.astype(np.float32))
            smooth = np.where(region, smooth, -1.0)
            z, y, x = (int(i) + b.start for i, b in zip(np.unravel_index(int(np.argmax(smooth)), smooth.shape), grown))
            entry["peak_uncertainty_lps"] = [round(v, 3) for v in image.TransformIndexToPhysicalPoint((x, y, z))]
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


def _gaussian_sigma1(values: np.ndarray) -> np.ndarray:
    """Gaussian smoothing, sigma 1 voxel, separable, borders mirrored (scipy's mode 'reflect')."""
    out = values.astype(np.float64)
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (_GAUSS_RADIUS, _GAUSS_RADIUS)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        window = [slice(None)] * out.ndim
        total = np.zeros(out.shape)
        for k, w in enumerate(_GAUSS):  # views, not copies: the same sum in the same order
            window[axis] = slice(k, k + n)
            total += w * padded[tuple(window)]
        out = total
    return out.astype(np.float32)


def _box_around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask``'s True voxels grown by ``margin``, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)
