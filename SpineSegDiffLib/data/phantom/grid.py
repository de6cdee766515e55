"""The voxel grid in anatomical millimetres, the tissue / label volumes being painted, smooth noise."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from SpineSegDiffLib.data.phantom.tissues import AIR


class Grid:
    """Voxel coordinates (anatomical mm) and the tissue / label volumes being painted."""

    def __init__(self, s: np.ndarray, p: np.ndarray, x: np.ndarray, shift: np.ndarray,
                 midline: float, subslices: int = 1):
        self.s, self.p, self.x = s, p, x
        self.subslices = subslices  # painted planes per sagittal slice (x holds all of them)
        # left-right distance from the scoliotic midline, per row and slice
        self.l = x[None, :] - midline - shift[:, None]
        shape = (s.size, p.size, x.size)
        self.tissue = np.full(shape, AIR, np.uint8)
        self.label = np.zeros(shape, np.uint16)

    def box(self, centre, radius_s: float, radius_p: float):
        """Row/column slices of the box around ``centre``; None when it misses the grid."""
        ks = np.searchsorted(self.s, [centre[0] - radius_s, centre[0] + radius_s])
        kp = np.searchsorted(self.p, [centre[1] - radius_p, centre[1] + radius_p])
        if ks[0] >= ks[1] or kp[0] >= kp[1]:
            return None
        return slice(int(ks[0]), int(ks[1])), slice(int(kp[0]), int(kp[1]))

    def local(self, box, origin, phi: float):
        """(a, b, l) of the box voxels in a frame at ``origin`` tilted by ``phi``."""
        ks, kp = box
        ds = (self.s[ks] - origin[0])[:, None]
        dp = (self.p[kp] - origin[1])[None, :]
        c, sn = math.cos(phi), math.sin(phi)
        a = (-ds * c - dp * sn)[:, :, None]
        b = (-ds * sn + dp * c)[:, :, None]
        return a, b, self.l[ks][:, None, :]

    def noise(self, rng: np.random.Generator, cell_mm: tuple[float, float, float]) -> np.ndarray:
        """Smooth noise over the grid with features ``cell_mm`` wide (s, p, x); drawn per
        sagittal slice and shared by its planes (the cheap way: x is the coarse axis)."""
        n = self.x.size // self.subslices
        x_step = axis_step(self.x) * self.subslices if n > 1 else 1.0
        cell = (cell_mm[0] / axis_step(self.s), cell_mm[1] / axis_step(self.p), cell_mm[2] / x_step)
        field = smooth_noise(rng, (self.s.size, self.p.size, n), cell)
        return np.repeat(field, self.subslices, axis=2)

    def paint(self, box, mask, tissue: int | None, label: int | None = None) -> None:
        ks, kp = box
        if tissue is not None:
            self.tissue[ks, kp][mask] = tissue
        if label is not None:
            self.label[ks, kp][mask] = label

def axis_step(axis: np.ndarray) -> float:
    return float(axis[1] - axis[0]) if axis.size > 1 else 1.0


def zoom_to(array: np.ndarray, shape, order: int) -> np.ndarray:
    zoom = [n / c for n, c in zip(shape, array.shape)]
    out = ndimage.zoom(array, zoom, order=order, grid_mode=True, mode="nearest")
    return out[:shape[0], :shape[1], :shape[2]]


def smooth_noise(rng: np.random.Generator, shape, cell) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with features about ``cell`` voxels wide.

    Coarse white noise, cubic-upsampled to a quarter-resolution grid (round blobs, no
    polygonal kinks), then linearly to full size (cheap).
    """
    coarse_shape = tuple(max(2, int(math.ceil(n / max(c, 1.0))) + 1) for n, c in zip(shape, cell))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    if max(cell[:2]) > 6:
        middle = tuple(max(c, int(math.ceil(n / 4))) for n, c in zip(shape, coarse_shape))
        coarse = zoom_to(coarse, middle, order=3)
    field = zoom_to(coarse, shape, order=1)
    return (field - field.mean()) / (field.std() + 1e-6)

def smooth_curve(rng: np.random.Generator, s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A slowly varying random profile over rows (thickness of fat, muscle ...)."""
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(150, 400)
    base = rng.uniform(lo, hi)
    return base + 0.25 * (hi - lo) * np.sin(2 * np.pi * s / period + phase)
