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
