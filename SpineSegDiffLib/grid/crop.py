"""The part of a model grid the ensemble samples: the spine's box plus a margin.

The network's cost on a CPU is evaluations x pixels, so the ensemble runs only on a box
around the spine (found by the presegmentation) and on the sagittal slices that hold it;
everything outside is background with uncertainty 0 and is pasted back at full size.
In-plane, the box is widened to whole tiles of the U-Net's downsampling factor (size and
offset), inside the grid; along the slices it needs no rounding (slices are separate inputs).
numpy only (no torch): the cache, the summary and the tests use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """Half-open index ranges on a model grid (slices, rows, columns) and the grid's full shape."""

    slices: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    full: tuple[int, int, int]  # (n_slices, H, W) of the grid

    @classmethod
    def whole(cls, shape: tuple[int, int, int]) -> CropBox:
        n, h, w = (int(v) for v in shape)
        return cls((0, n), (0, h), (0, w), (n, h, w))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in (self.slices, self.rows, self.cols))

    @property
    def is_whole(self) -> bool:
        return self.shape == self.full

    @property
    def pixel_fraction(self) -> float:
        """Share of the grid's pixels the ensemble samples."""
        return float(np.prod(self.shape) / np.prod(self.full))

    def cut(self, array: np.ndarray) -> np.ndarray:
        """The box of a grid array (n, ..., H, W): slices on axis 0, rows and columns the last two."""
        (s0, s1), (r0, r1), (c0, c1) = self.slices, self.rows, self.cols
        return array[s0:s1, ..., r0:r1, c0:c1]

    def to_dict(self) -> dict:
        return {"slices": list(self.slices), "rows": list(self.rows), "cols": list(self.cols),
                "grid_shape": list(self.full), "slices_kept": self.shape[0],
                "pixel_fraction": round(self.pixel_fraction, 4)}


def spine_box(mask: np.ndarray, pixel_mm: float, slice_mm: float, margin_mm: float,
              slice_margin_mm: float, multiple: int, in_plane: bool = True) -> CropBox | None:
    """The box around a grid mask (n, H, W) bool, grown by the margins; None if the mask is empty.

    Slices: the first to the last slice holding the mask, plus ``slice_margin_mm`` (at least
    one slice) on either side. Rows and columns: the mask's extent over those slices plus
    ``margin_mm``, widened to whole tiles of ``multiple`` pixels (so its size and its
    offset are multiples of the U-Net's downsampling factor) and clipped to the grid.
    ``in_plane=False`` keeps whole slices (rows and columns uncropped).
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"spine_box needs a (slices, rows, cols) mask, got shape {mask.shape}")
    if not mask.any():
        return None
    n, h, w = mask.shape
    s0, s1 = _extent(mask.any(axis=(1, 2)))
    slice_pad = max(1, math.ceil(slice_margin_mm / slice_mm - 1e-9))
    slices = (max(0, s0 - slice_pad), min(n, s1 + slice_pad))
    if not in_plane:
        return CropBox(slices, (0, h), (0, w), (n, h, w))
    pad = math.ceil(margin_mm / pixel_mm - 1e-9)
    rows = _fit(*_extent(mask.any(axis=(0, 2))), pad, h, multiple)
    cols = _fit(*_extent(mask.any(axis=(0, 1))), pad, w, multiple)
    return CropBox(slices, rows, cols, (n, h, w))


def _extent(hits: np.ndarray) -> tuple[int, int]:
    index = np.flatnonzero(hits)
    return int(index[0]), int(index[-1]) + 1


def _fit(low: int, high: int, pad: int, length: int, multiple: int) -> tuple[int, int]:
    """[low - pad, high + pad) widened outwards to whole tiles of ``multiple`` pixels, inside [0, length).

    On tile boundaries, the U-Net's 2x2 poolings see the same pixel groups as on the whole
    grid, and the image encoder's maps of the whole slice can be cut to the box exactly.
    """
    if length % multiple:
        return 0, length  # the grid itself is not whole tiles (GridSpec keeps it so): no crop
    low = max(0, (low - pad) // multiple * multiple)
    high = min(length, -(-(high + pad) // multiple) * multiple)
    return low, high
