"""The real-data measures of partial references (DESIGN.md, "Scoring on the real development set").

Vertebral-body-only and disc-only references decide only part of the answer, so besides
recall the evaluation measures what they do decide:

- ``body_box_dice``: Dice of "vertebra" against the bodies, inside the union of each
  body's bounding box grown by 2 voxels (posterior elements fall outside the boxes);
- ``span_volume_ratio``: "vertebra" volume inside the bodies' superior-inferior span
  divided by the body volume (a whole vertebra is about 1.5-2.5x its body: far above
  means muscle painted as bone, far below missing posterior elements);
- ``beyond_false_positive_share``: the share of the voxels that the bodies place beyond
  the reach of the posterior elements or beside the bodies (``body_only``) called vertebra;
- on disc-only references: ``band_dice`` (disc Dice inside the discs' superior-inferior
  band +- 10 mm) and ``between_discs_vertebra_share`` (of the voxels between two
  neighbouring discs, column by column, the share called vertebra);
- ``decided_uncertainty_auroc``: voxel uncertainty AUROC against error inside the region
  the reference decides.

Superior-inferior is found from the image direction, so any orientation is scored alike.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

BOX_MARGIN_VOXELS = 2
BAND_MARGIN_MM = 10.0
# two neighbouring discs are one vertebral body apart (20-35 mm in the lumbar spine)
BETWEEN_DISCS_MAX_GAP_MM = 45.0


def superior_axis(direction: tuple[float, ...]) -> int:
    """The numpy axis (of a (z, y, x) array) closest to the patient's superior-inferior axis."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    sitk_axis = int(np.argmax(np.abs(d[2])))  # column a: physical direction of index axis a
    return 2 - sitk_axis


def body_boxes(body: np.ndarray) -> np.ndarray:
    """The union of each body's (connected component's) bounding box grown by 2 voxels."""
    labels, _ = ndimage.label(body)
    boxes = np.zeros(body.shape, dtype=bool)
    for box in ndimage.find_objects(labels):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - BOX_MARGIN_VOXELS, 0), min(s.stop + BOX_MARGIN_VOXELS, size))
                      for s, size in zip(box, body.shape))
        boxes[grown] = True
    return boxes


def body_box_dice(pred: np.ndarray, body: np.ndarray) -> float:
    """Dice of ``pred`` vs ``body`` inside the union of each body's box grown by 2 voxels."""
    boxes = body_boxes(body)
    p, r = pred & boxes, body & boxes
    denom = p.sum() + r.sum()
    return float(2 * (p & r).sum() / denom) if denom else math.nan


def _band(mask: np.ndarray, axis: int, margin: int) -> np.ndarray:
    hit = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
    band = np.zeros(mask.shape[axis], dtype=bool)
    if hit.size:
        band[max(hit[0] - margin, 0):hit[-1] + margin + 1] = True
    shape = [1] * mask.ndim
    shape[axis] = -1
    return np.broadcast_to(band.reshape(shape), mask.shape)


def span_volume_ratio(pred: np.ndarray, body: np.ndarray, si_axis: int) -> float:
    """Predicted vertebra volume within the bodies' superior-inferior span / body volume."""
    if not body.any():
        return math.nan
    return float((pred & _band(body, si_axis, 0)).sum() / body.sum())


def reference_band(ref: np.ndarray, si_axis: int, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """The reference's superior-inferior band grown by 10 mm (where a disc-only reference decides)."""
    return _band(ref, si_axis, int(round(BAND_MARGIN_MM / spacing_zyx[si_axis])))


def band_dice(pred: np.ndarray, ref: np.ndarray, si_axis: int, spacing_zyx: tuple[float, ...]) -> float:
    """Dice inside the reference's superior-inferior band grown by 10 mm."""
    band = reference_band(ref, si_axis, spacing_zyx)
    p, r = pred & band, ref & band
    denom = p.sum() + r.sum()
    return float(2 * (p & r).sum() / denom) if denom else math.nan


def between_discs(disc: np.ndarray, si_axis: int, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """Voxels lying between two disc voxels of the same superior-inferior line, at most
    one vertebral body apart: the vertebral bodies a disc-only reference implies."""
    moved = np.moveaxis(disc, si_axis, 0)
    n = moved.shape[0]
    idx = np.arange(n).reshape((-1,) + (1,) * (moved.ndim - 1))
    above = np.maximum.accumulate(np.where(moved, idx, -1), axis=0)
    below = np.minimum.accumulate(np.where(moved, idx, 4 * n)[::-1], axis=0)[::-1]
    gap = (below - above - 1) * spacing_zyx[si_axis]
    out = ~moved & (above >= 0) & (below < n) & (gap <= BETWEEN_DISCS_MAX_GAP_MM)
    return np.moveaxis(out, 0, si_axis)


def share(pred: np.ndarray, region: np.ndarray) -> float:
    return float((pred & region).sum() / region.sum()) if region.any() else math.nan
