"""What vertebral-body-only labels tell about the rest of a sagittal slice.

The VB sets of the real-MRI folder label vertebral bodies only; their other voxels are
"unknown", not background. Two regions next to the bodies are known all the same:

- **disc spaces**: along the superior-inferior axis, the gap (at most
  ``DISC_GAP_MAX_MM``) between two labelled bodies holds the intervertebral disc — no
  bone, no canal;
- **prevertebral region**: more than ``ANTERIOR_MARGIN_MM`` in front of the bodies'
  front edge, between the first and the last labelled body, lie vessels, psoas and
  bowel — no part of a vertebra, disc or canal (the vertebral body is convex and the
  posterior elements lie behind it).

Without them the training loss sees no negatives near the spine on real images, and a
model fine-tuned on the real cases learnt to paint discs and soft tissue as bone.
Training uses both regions as targets; evaluation reports how much of them a
prediction wrongly calls vertebra.

Slices are in the model grid's orientation: rows superior -> inferior, columns
anterior -> posterior (see ``geometry.grid_axes``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DISC_GAP_MAX_MM = 20.0  # a lumbar disc is 7-15 mm high; wider gaps are missing labels
ANTERIOR_MARGIN_MM = 5.0  # room for a bulging annulus and small anterior osteophytes
EDGE_WINDOW_MM = 10.0  # the front edge used per row is the most anterior within this reach


def disc_spaces(body: np.ndarray, row_spacing_mm: float, max_gap_mm: float = DISC_GAP_MAX_MM) -> np.ndarray:
    """Pixels of one sagittal slice lying between two body pixels of the same column,
    with a gap of at most ``max_gap_mm`` between them. ``body``: (rows, cols) bool."""
    body = np.asarray(body, dtype=bool)
    rows = np.arange(body.shape[0])[:, None]
    # row of the nearest body pixel above / below each pixel of its column (-1 / huge when none)
    above = np.maximum.accumulate(np.where(body, rows, -1), axis=0)
    below = np.minimum.accumulate(np.where(body, rows, body.shape[0] * 4)[::-1], axis=0)[::-1]
    gap_rows = below - above - 1  # pixels strictly between the two body pixels
    max_rows = max_gap_mm / row_spacing_mm
    return ~body & (above >= 0) & (below < body.shape[0]) & (gap_rows <= max_rows)


def prevertebral_region(body: np.ndarray, spacing_mm: tuple[float, float],
                        margin_mm: float = ANTERIOR_MARGIN_MM, window_mm: float = EDGE_WINDOW_MM) -> np.ndarray:
    """Pixels more than ``margin_mm`` in front of the bodies, between the first and last
    row holding a body. ``body``: (rows, cols) bool; ``spacing_mm``: (row, col) mm."""
    body = np.asarray(body, dtype=bool)
    out = np.zeros(body.shape, dtype=bool)
    body_rows = np.nonzero(body.any(axis=1))[0]
    if body_rows.size == 0:
        return out
    front = np.argmax(body[body_rows], axis=1).astype(float)  # first (most anterior) body column
    rows = np.arange(body_rows[0], body_rows[-1] + 1)
    edge = np.interp(rows, body_rows, front)  # across disc levels: between the bodies' edges
    reach = max(0, int(round(window_mm / spacing_mm[0])))
    edge = ndimage.minimum_filter1d(edge, size=2 * reach + 1, mode="nearest")
    limit = edge - margin_mm / spacing_mm[1]
    cols = np.arange(body.shape[1])[None, :]
    out[rows] = cols < limit[:, None]
    return out


def slice_regions(body: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(disc spaces, prevertebral region) of one sagittal slice, as bool (rows, cols)."""
    return disc_spaces(body, spacing_mm[0]), prevertebral_region(body, spacing_mm)


def volume_regions(body: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Both regions for every slice of a (slices, rows, cols) body mask on the model grid."""
    gaps = np.zeros(body.shape, dtype=bool)
    front = np.zeros(body.shape, dtype=bool)
    for i in range(body.shape[0]):
        if body[i].any():
            gaps[i], front[i] = slice_regions(body[i], spacing_mm)
    return gaps, front


# --- beyond the posterior elements (3-D: needs the bodies of neighbouring slices) -------
# A lumbar vertebra's posterior elements reach about 55-65 mm behind the body's posterior
# wall in the midline (spinous process) and 35-45 mm off the midline (laminae, facets);
# transverse processes stay within about 25 mm of the wall. Everything farther back is
# paraspinal muscle, fat or skin, and anything more than a few mm beside the body and in
# front of its posterior wall is psoas, vessels or rib heads: not vertebra, disc or canal.
MIDLINE_HALF_WIDTH_MM = 12.0  # spinous processes, allowing for rotation
LATERAL_REACH_MM = 50.0  # deepest laminae / facets off the midline, plus margin
MIDLINE_REACH_MM = 75.0  # deepest spinous process tip, plus margin
SIDE_MARGIN_MM = 5.0  # bulging discs and osteophytes beside the body
FRONT_OF_WALL_MM = 5.0  # pedicles leave the body at its posterior wall
SMOOTH_WINDOW_MM = 10.0  # per-row wall and edges: the most generous within this reach


def _per_row(values: np.ndarray, rows_with: np.ndarray, n_rows: int, reach: int, kind: str) -> np.ndarray:
    """A per-row value interpolated across rows without bodies, widened over +-reach rows."""
    out = np.interp(np.arange(n_rows), rows_with, values)
    size = 2 * reach + 1
    return (ndimage.maximum_filter1d if kind == "max" else ndimage.minimum_filter1d)(out, size=size, mode="nearest")


def beyond_posterior_elements(body: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Voxels that cannot be vertebra, disc or canal, given only the vertebral bodies.

    ``body``: (slices, rows, cols) bool on the model grid (slices left->right, rows
    superior->inferior, cols anterior->posterior); ``spacing_mm``: (slice, row, col).
    Only rows between the first and last labelled body count (above and below, other
    vertebrae and the sacrum may lie anywhere). Returns bool of the same shape.
    """
    body = np.asarray(body, dtype=bool)
    out = np.zeros(body.shape, dtype=bool)
    rows_with = np.nonzero(body.any(axis=(0, 2)))[0]
    if rows_with.size == 0:
        return out
    s_mm, r_mm, c_mm = (float(v) for v in spacing_mm)
    n_slices, n_rows, n_cols = body.shape
    reach = max(0, int(round(SMOOTH_WINDOW_MM / r_mm)))
    per_row = body[:, rows_with, :]  # (slices, k, cols)
    cols_any = per_row.any(axis=0)  # (k, cols)
    wall = n_cols - 1 - np.argmax(cols_any[:, ::-1], axis=1)  # most posterior body column
    slices_any = per_row.any(axis=2)  # (slices, k)
    left = np.argmax(slices_any, axis=0)
    right = n_slices - 1 - np.argmax(slices_any[::-1], axis=0)
    wall = _per_row(wall.astype(float), rows_with, n_rows, reach, "max")
    left = _per_row(left.astype(float), rows_with, n_rows, reach, "min")
    right = _per_row(right.astype(float), rows_with, n_rows, reach, "max")
    mid = (left + right) / 2
    r0, r1 = int(rows_with[0]), int(rows_with[-1]) + 1
    s_idx = np.arange(n_slices)[:, None, None]
    c_idx = np.arange(n_cols)[None, None, :]
    rows = slice(r0, r1)
    depth = (c_idx - wall[None, rows, None]) * c_mm  # > 0 behind the posterior wall
    lateral = np.abs(s_idx - mid[None, rows, None]) * s_mm
    outside = np.maximum(np.maximum(left[None, rows, None] - s_idx, s_idx - right[None, rows, None]), 0) * s_mm
    behind = ((depth > LATERAL_REACH_MM) & (lateral > MIDLINE_HALF_WIDTH_MM)) | (depth > MIDLINE_REACH_MM)
    beside = (depth < -FRONT_OF_WALL_MM) & (outside > SIDE_MARGIN_MM)
    out[:, rows, :] = (behind | beside) & ~body[:, rows, :]
    return out
