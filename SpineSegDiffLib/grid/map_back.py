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
from typing import TYPE_CHECKING, Iterator

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
    # a fixed order, whatever the box (so any box or slab gives the same bits for a voxel): the
    # innermost (contiguous) axis first, while the array is smallest, as it needs gathers;
    # the outermost last, where whole planes are read as views
    for k in (2, 1, 0):
        m, part = maps[k], box[k]
        args = (values, lead + k, m.lo[part], m.hi[part], m.w_lo[part], m.w_hi[part])
        values = _along_inner_axis(*args) if k == 2 else _along_outer_axis(*args)
    return values


_SLAB_PLANES = 16


def slabs_in_box(array: np.ndarray, maps: list[AxisMap], box: Box, planes: int = _SLAB_PLANES,
                 support: np.ndarray | None = None) -> Iterator[tuple[Box, np.ndarray]]:
    """``linear_in_box`` in slabs of input planes (numpy axis 0): (the slab's box, values (..., its sizes)).

    Each slab reads only the grid planes it needs, so every temporary is a few MB that the
    allocator reuses: fresh memory costs a page fault per 4 kB (here ~0.15 s of system time
    per 44 MB, as much as the arithmetic). The same numbers as ``linear_in_box`` of the box.
    ``support`` (the grid's (n, H, W) bool, grid order): the only grid voxels whose values
    matter; each slab is then narrowed to the input voxels reading them there, and a slab
    that reads none is skipped (a spine crosses a slab's rows in a fraction of its width).
    """
    first = maps[0]
    lead = np.ndim(array) - 3
    for start in range(box[0].start, box[0].stop, planes):
        part = slice(start, min(start + planes, box[0].stop))
        window = _grid_window(maps, part)
        slab_box = (part, *box[1:])
        if support is not None:
            slab_box = intersect(reading_support(maps, support, part), slab_box)
            if slab_box is None:
                continue
        g0 = window[first.grid_axis].start
        shifted = AxisMap(first.grid_axis, first.continuous, first.lo - g0, first.hi - g0, first.w_lo, first.w_hi)
        grid_part = np.asarray(array)[(slice(None),) * lead + window]
        yield slab_box, linear_in_box(grid_part, [shifted, *maps[1:]], slab_box)


def _grid_window(maps: list[AxisMap], part: slice) -> tuple[slice, ...]:
    """The grid planes (grid order, the other axes whole) that the input planes ``part`` read."""
    first = maps[0]
    g0 = int(min(first.lo[part].min(), first.hi[part].min()))
    g1 = int(max(first.lo[part].max(), first.hi[part].max())) + 1
    window = [slice(None)] * 3
    window[first.grid_axis] = slice(g0, g1)
    return tuple(window)


def reading_support(maps: list[AxisMap], support: np.ndarray, part: slice) -> Box | None:
    """The box of the input planes ``part`` (numpy axis 0) whose voxels read a True voxel of
    ``support`` (the grid's (n, H, W) bool, grid order); None where none does."""
    window = _grid_window(maps, part)
    read = nonzero_box(support[window])
    if read is None:
        return None
    read = tuple(slice(r.start + w.start, r.stop + w.start) if w.start is not None else r for r, w in zip(read, window))
    return (part, *box_reading(maps, read)[1:])


_GATHER_PLANE = 16384  # values per plane below which one gather beats a Python loop over the planes


def _along_outer_axis(values: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray,
                      w_hi: np.ndarray) -> np.ndarray:
    """``_along_inner_axis`` for an axis that is not the innermost: index by index on plane views,
    no gathered copies (a third of the memory traffic of gathering), unless the planes are
    so small that the loop's per-plane overhead costs more than gathering them (measured:
    381 planes of 1.8 k values, 3.9 ms looped vs 2.8 ms gathered). The same products and
    sums either way, so the same bits."""
    before = (slice(None),) * axis
    if values[before + (0,)].size < _GATHER_PLANE:
        shape = [1] * values.ndim
        shape[axis] = len(lo)
        out = np.take(values, lo, axis=axis)
        out *= w_lo.reshape(shape)
        spare = np.take(values, hi, axis=axis)
        spare *= w_hi.reshape(shape)
        out += spare
        return out
    shape = list(values.shape)
    shape[axis] = len(lo)
    out = np.empty(shape, np.float32)
    spare = np.empty(values[before + (0,)].shape, np.float32)
    for i in range(len(lo)):
        target = out[before + (i,)]
        np.multiply(values[before + (lo[i],)], w_lo[i], out=target)
        if w_hi[i] != 0:
            np.multiply(values[before + (hi[i],)], w_hi[i], out=spare)
            np.add(target, spare, out=target)
    return out


def _along_inner_axis(values: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray,
                      w_hi: np.ndarray) -> np.ndarray:
    """out[..., i] = values[..., lo[i]] * w_lo[i] + values[..., hi[i]] * w_hi[i] along the last axis.

    Row gathers of a 2-D view (``np.take`` along the last axis copies element by element,
    several times slower). Elementwise float32 products and sums, not a matrix product: a
    BLAS would fuse them (FMA) differently from build to build, and Slicer's numpy is not
    the engine's.
    """
    if axis != values.ndim - 1:
        raise ValueError("the inner axis pass works on the last axis")
    rows = values.reshape(-1, values.shape[-1])
    low = rows[:, lo]
    low *= w_lo
    high = rows[:, hi]
    high *= w_hi
    low += high
    return low.reshape(*values.shape[:-1], len(lo))


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


def within(inner: Box, outer: Box) -> Box:
    """``inner`` in the coordinates of ``outer``'s corner."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))


def intersect(a: Box | None, b: Box | None) -> Box | None:
    """The common part of two boxes, or None (also when either is None)."""
    if a is None or b is None:
        return None
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return out if all(o.stop > o.start for o in out) else None


@dataclass
class LinearMap:
    """Grid maps (C, n, H, W) on the input's voxels, computed where and when asked for: 0 outside
    ``box``, the input voxels that read a non-zero grid value."""

    grid_values: np.ndarray  # (C, n, H, W) float32
    maps: list[AxisMap]
    shape: tuple[int, int, int]  # the input's (z, y, x)
    box: Box | None  # None: every grid value is 0

    @classmethod
    def of(cls, grid_values: np.ndarray, maps: list[AxisMap], shape: tuple[int, int, int]) -> "LinearMap":
        values = np.ascontiguousarray(grid_values, np.float32)
        grid_box = nonzero_box(values)
        return cls(values, maps, shape, box_reading(maps, grid_box) if grid_box is not None else None)

    def slabs(self) -> Iterator[tuple[Box, np.ndarray]]:
        """(input box, values (C, box sizes)) slab by slab of ``box``."""
        if self.box is not None and all(b.stop > b.start for b in self.box):
            yield from slabs_in_box(self.grid_values, self.maps, self.box)

    def crop(self, box: Box, channel: int) -> np.ndarray:
        """Channel ``channel`` on the input voxels of ``box``."""
        out = np.zeros(tuple(b.stop - b.start for b in box), np.float32)
        common = intersect(box, self.box)
        if common is not None:
            out[within(common, box)] = linear_in_box(self.grid_values[channel], self.maps, common)
        return out

    def full(self, channel: int) -> np.ndarray:
        """Channel ``channel`` on the whole input grid."""
        return self.crop(tuple(slice(0, n) for n in self.shape), channel)
