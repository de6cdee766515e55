"""Model-grid maps back onto the input's voxels by separable linear interpolation, inside a box.

The model grid's axes are the input's own axes, permuted and flipped (``geometry.py``), so
linear resampling onto the input grid is a product of three 1-D interpolations: each input
index along an axis reads two neighbouring grid positions along one grid axis. Computed
axis by axis this costs a few passes over the output instead of ITK's per-voxel
trilinear evaluation (0.25 s of CPU per map on an 11 M-voxel input), and a box of input
voxels can be computed alone: where every grid value is 0, the result is 0.

The values are ITK's ``sitkLinear`` resampling with default 0: within half a grid voxel
of the grid's edge the edge value is used, outside the grid 0. Float32 arithmetic, so
they equal ITK's up to float rounding (``Testing/test_map_back.py``: below 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from SpineSegDiffLib.grid.geometry import ModelGrid

Box = tuple[slice, slice, slice]  # input voxels, numpy order (z, y, x)


@dataclass(frozen=True)
class AxisMap:
    """How one input axis (numpy order) reads the grid: grid axis, neighbours and their weights."""

    grid_axis: int  # numpy axis of the grid array (0 slices, 1 rows, 2 columns)
    continuous: np.ndarray  # (size,) float64: grid continuous index of each input index
    lo: np.ndarray  # (size,) int: the lower neighbour
    hi: np.ndarray  # (size,) int: the upper neighbour (== lo at the edge)
    w_lo: np.ndarray  # (size,) float32: weight of lo (0 outside the grid)
    w_hi: np.ndarray  # (size,) float32: weight of hi (0 outside the grid)


def axis_maps(grid: "ModelGrid") -> list[AxisMap]:
    """One ``AxisMap`` per input numpy axis (z, y, x); ValueError if the axes are not parallel."""
    ref = grid._reference
    g = grid.input_geometry
    grid_matrix = np.asarray(ref.GetDirection(), float).reshape(3, 3) * np.asarray(ref.GetSpacing(), float)
    to_grid = np.linalg.inv(grid_matrix)
    in_dir = np.asarray(g["direction"], float).reshape(3, 3)
    in_spacing = np.asarray(g["spacing"], float)
    c0 = to_grid @ (np.asarray(g["origin"], float) - np.asarray(ref.GetOrigin(), float))
    grid_size = ref.GetSize()  # sitk order (x columns, y rows, z slices)
    maps = []
    for numpy_axis in range(3):
        a = 2 - numpy_axis  # sitk axis of the input
        delta = to_grid @ (in_dir[:, a] * in_spacing[a])
        gs = int(np.argmax(np.abs(delta)))
        if np.abs(np.delete(delta, gs)).max() > 1e-6 * abs(delta[gs]):
            raise ValueError("the model grid's axes are not parallel to the input's")
        c = c0[gs] + delta[gs] * np.arange(g["size"][a], dtype=float)
        n = grid_size[gs]
        inside = (c >= -0.5) & (c < n - 0.5)  # ITK's IsInsideBuffer
        clamped = np.clip(c, 0.0, n - 1)  # ITK's linear interpolator: the edge value near the edge
        lo = np.floor(clamped).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        w = clamped - lo
        maps.append(AxisMap(2 - gs, c, lo, hi, np.where(inside, 1.0 - w, 0.0).astype(np.float32),
                            np.where(inside, w, 0.0).astype(np.float32)))
    return maps


def box_reading(maps: list[AxisMap], grid_box: tuple[slice, slice, slice]) -> Box:
    """The input voxels whose value reads any grid voxel of ``grid_box`` (grid numpy order);
    outside it the result is 0 wherever the grid is 0 outside ``grid_box``."""
    box = []
    for m in maps:
        part = grid_box[m.grid_axis]
        reads = ((m.lo >= part.start) & (m.lo < part.stop) & (m.w_lo != 0)) | \
                ((m.hi >= part.start) & (m.hi < part.stop) & (m.w_hi != 0))
        hit = np.flatnonzero(reads)
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0))
    return tuple(box)


def nonzero_box(arrays: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box (last three axes) of the non-zero values of ``arrays`` (..., n, H, W); None if all 0."""
    support = arrays != 0
    while support.ndim > 3:
        support = support.any(axis=0)
    box = []
    for axis in range(3):
        hit = np.flatnonzero(support.any(axis=tuple(a for a in range(3) if a != axis)))
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def linear_in_box(array: np.ndarray, maps: list[AxisMap], box: Box) -> np.ndarray:
    """``array`` (..., n, H, W) on the grid -> float32 (..., box sizes) on the input's voxels in ``box``."""
    values = np.asarray(array, np.float32)
    lead = values.ndim - 3
    # input numpy axis k reads grid axis maps[k].grid_axis: put those in input order first
    values = np.moveaxis(values, [lead + m.grid_axis for m in maps], [lead, lead + 1, lead + 2])
    # cheapest first: the axis that grows the array least
    order = sorted(range(3), key=lambda k: (box[k].stop - box[k].start) / max(values.shape[lead + k], 1))
    for k in order:
        m, part = maps[k], box[k]
        values = _along_axis(values, lead + k, m.lo[part], m.hi[part], m.w_lo[part], m.w_hi[part])
    return values


_CHUNK_BYTES = 4 << 20  # temporaries of a few MB, reused from cache, instead of fresh 100 MB arrays


def _along_axis(values: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray,
                w_hi: np.ndarray) -> np.ndarray:
    """out[..., i, ...] = values[..., lo[i], ...] * w_lo[i] + values[..., hi[i], ...] * w_hi[i] along ``axis``.

    In chunks of output indices: allocating two full-size temporaries per pass cost more
    (page faults, mostly system time) than the arithmetic on an 11 M-voxel volume.
    """
    shape = list(values.shape)
    shape[axis] = len(lo)
    out = np.empty(shape, np.float32)
    per_index = max(out.nbytes // max(len(lo), 1), 1)
    step = max(1, _CHUNK_BYTES // per_index)
    weight_shape = [1] * values.ndim
    weight_shape[axis] = -1
    for start in range(0, len(lo), step):
        part = slice(start, min(start + step, len(lo)))
        window = [slice(None)] * values.ndim
        window[axis] = part
        target = out[tuple(window)]
        low = np.take(values, lo[part], axis=axis)
        high = np.take(values, hi[part], axis=axis)
        np.multiply(low, w_lo[part].reshape(weight_shape), out=low)
        np.multiply(high, w_hi[part].reshape(weight_shape), out=high)
        np.add(low, high, out=target)
    return out


def linear_to_input(array: np.ndarray, maps: list[AxisMap], shape: tuple[int, int, int],
                    box: Box | None = None) -> np.ndarray:
    """``array`` (..., n, H, W) -> float32 (..., *shape) on the whole input grid; computed only
    in ``box`` (default: everything), 0 elsewhere."""
    box = box if box is not None else tuple(slice(0, s) for s in shape)
    lead_shape = np.shape(array)[:-3]
    out = np.zeros((*lead_shape, *shape), np.float32)
    if all(b.stop > b.start for b in box):
        out[(..., *box)] = linear_in_box(array, maps, box)
    return out


@dataclass
class BoxedArray:
    """Values inside a box of a larger array that is 0 (or False) everywhere else."""

    values: np.ndarray  # (..., box sizes)
    box: Box
    shape: tuple[int, int, int]  # the whole array's last three axes

    def full(self) -> np.ndarray:
        """The whole array (..., *shape)."""
        out = np.zeros((*self.values.shape[:-3], *self.shape), self.values.dtype)
        out[(..., *self.box)] = self.values
        return out

    def crop(self, box: Box) -> np.ndarray:
        """The whole array's values in ``box`` (zeros where ``box`` leaves ``self.box``)."""
        out = np.zeros((*self.values.shape[:-3], *(b.stop - b.start for b in box)), self.values.dtype)
        src, dst = [], []
        for mine, want in zip(self.box, box):
            lo, hi = max(mine.start, want.start), min(mine.stop, want.stop)
            if hi <= lo:
                return out
            src.append(slice(lo - mine.start, hi - mine.start))
            dst.append(slice(lo - want.start, hi - want.start))
        out[(..., *dst)] = self.values[(..., *src)]
        return out


def boxed_linear(array: np.ndarray, maps: list[AxisMap], shape: tuple[int, int, int],
                 support: np.ndarray | None = None) -> BoxedArray:
    """``array`` (..., n, H, W) on the input grid, computed only where it can differ from 0
    (``support``, default ``array != 0``, is where the grid values are not 0)."""
    grid_box = nonzero_box(array if support is None else support)
    if grid_box is None:
        box: Box = (slice(0, 0),) * 3
        return BoxedArray(np.zeros((*np.shape(array)[:-3], 0, 0, 0), np.float32), box, shape)
    box = box_reading(maps, grid_box)
    return BoxedArray(linear_in_box(array, maps, box), box, shape)
