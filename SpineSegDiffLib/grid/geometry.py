"""Bring any 3D MRI onto the model grid (sagittal slices) and map results back.

The model grid (see docs/architecture.md, "Model grid contract") is a real
SimpleITK image whose axes are the input's own axes, permuted and flipped so that
the numpy array ``slices[n, row, col]`` reads:

- axis 0: sagittal slices, patient left -> right (LPS -x),
- axis 1: rows, superior -> inferior (LPS -z),
- axis 2: columns, anterior -> posterior (LPS +y).

Because the grid's axes stay parallel to the input's, a sagittal acquisition is
never resampled through-plane and an oblique one is never rotated: resampling is
only a per-axis change of spacing. Results go back onto the input's exact origin,
spacing, direction and size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.imageio import geometry_of, same_geometry

# Percentiles (of the input's voxels) mapped to 0 and 1.
NORMALISATION_PERCENTILES = (1.0, 99.0)
# Normalised intensities are clipped to this range: bright fat / CSF above the
# 99th percentile keeps a little contrast, outliers cannot dominate.
NORMALISED_CLIP = (-0.25, 1.25)
# Percentiles are estimated from at most this many voxels (evenly strided).
_PERCENTILE_SAMPLE = 4_000_000
# LPS axis index -> plane whose normal it is.
_PLANE_OF_NORMAL = {0: "sagittal", 1: "coronal", 2: "axial"}

Interpolation = Literal["nearest", "linear"]


@dataclass(frozen=True)
class GridSpec:
    """In-plane pixel spacing (mm), square in-plane size, finest slice spacing (mm)."""

    spacing_mm: float = 1.0
    size: int = 128
    min_slice_spacing_mm: float = 2.0

    def __post_init__(self) -> None:
        # the U-Net halves the image four times, hence multiples of 16
        if not (isinstance(self.size, int) and self.size > 0 and self.size % 16 == 0):
            raise ValueError(f"GridSpec.size must be a positive multiple of 16, got {self.size!r}")
        for name in ("spacing_mm", "min_slice_spacing_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"GridSpec.{name} must be a positive number, got {value!r}")


@dataclass
class ModelGrid:
    """An MRI on the model grid plus what is needed to map arrays back.

    ``slices``: float32 ``(n_slices, size, size)``, normalised intensities (0 in padding);
    None for a grid made with ``intensities=False`` (geometry only, for mapping back).
    ``grid_image``: the same values as a SimpleITK image carrying the grid geometry.
    ``fov_mask``: bool ``(n_slices, size, size)``, True where the input has data.
    ``intensity_percentiles``: the input intensities mapped to 0 and 1.
    ``input_axes``: input image axis (SimpleITK x=0, y=1, z=2) behind slices, rows, columns.
    ``flipped``: whether each of those runs against the input axis.
    ``acquisition_plane``: "sagittal", "axial" or "coronal" (see ``acquisition_plane``).
    """

    slices: np.ndarray | None
    grid_image: sitk.Image
    spec: GridSpec
    acquisition_plane: str
    input_geometry: dict
    fov_mask: np.ndarray
    intensity_percentiles: tuple[float, float] | None
    input_axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    _reference: sitk.Image = field(repr=False, default=None)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_slices, size, size): the grid arrays' shape."""
        x, y, z = self._reference.GetSize()
        return z, y, x

    @property
    def reoriented(self) -> bool:
        """True when the input was not acquired sagittally (e.g. axial -> sagittal slices)."""
        return self.acquisition_plane != "sagittal"

    def labels_to_grid(self, label_image: sitk.Image) -> np.ndarray:
        """A label map on the input's grid -> uint8 ``(n_slices, size, size)`` (nearest)."""
        self._check_on_input_grid(label_image, "label map")
        values = sitk.GetArrayViewFromImage(label_image)
        if values.min() < 0 or values.max() > 255:
            raise ValueError("labels_to_grid needs label values in 0..255")
        moved = _resample(sitk.Cast(label_image, sitk.sitkUInt8), self._reference, sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(moved)

    def image_to_grid(self, other_image: sitk.Image) -> np.ndarray:
        """Another scalar image on the input's grid -> float32 grid array (linear, not normalised)."""
        self._check_on_input_grid(other_image, "image")
        moved = _resample(sitk.Cast(other_image, sitk.sitkFloat32), self._reference, sitk.sitkLinear, 0.0)
        return sitk.GetArrayFromImage(moved)

    def input_image(self, array: np.ndarray) -> sitk.Image:
        """An array in the input's voxel order (z, y, x) as an image on the input's geometry."""
        image = sitk.GetImageFromArray(array)
        g = self.input_geometry
        image.SetOrigin(g["origin"])
        image.SetSpacing(g["spacing"])
        image.SetDirection(g["direction"])
        return image

    def round_trip(self, mask: np.ndarray) -> np.ndarray:
        """A boolean mask on the input's voxels taken onto the grid and back (linear, >= 0.5).

        The best any model working on this grid can reach: what ``mask`` loses here, no
        network output mapped back the same way can recover (benchmarks/grid_ceiling.py).
        """
        on_grid = self.image_to_grid(self.input_image(np.asarray(mask, dtype=np.float32)))
        return sitk.GetArrayFromImage(self.to_input_geometry(on_grid, "linear")) >= 0.5

    def to_input_geometry(self, array: np.ndarray, interpolation: Interpolation = "nearest",
                          default_value: float = 0) -> sitk.Image:
        """Map a grid array back onto the input's exact origin, spacing, direction and size.

        ``array`` is ``(n_slices, size, size)`` -> scalar image, or
        ``(n_slices, C, size, size)`` -> image with C components per voxel (scalar if C == 1).
        ``"nearest"`` (labels) gives UInt8 and needs whole values in 0..255;
        ``"linear"`` (probabilities, uncertainty) gives Float32.
        """
        array = np.asarray(array)
        n, size = self.shape[0], self.spec.size
        if array.ndim not in (3, 4) or array.shape[0] != n or array.shape[-2:] != (size, size):
            raise ValueError(f"to_input_geometry needs an array ({n}, {size}, {size}) or "
                             f"({n}, C, {size}, {size}), got {array.shape}")
        if interpolation == "nearest":
            if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
                raise ValueError("nearest interpolation is for label arrays: whole values in 0..255")
            array, interpolator = array.astype(np.uint8), sitk.sitkNearestNeighbor
        elif interpolation == "linear":
            array, interpolator = array.astype(np.float32), sitk.sitkLinear
        else:
            raise ValueError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 4:
            on_grid = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 1, -1)), isVector=True)
        else:
            on_grid = sitk.GetImageFromArray(array)
        on_grid.CopyInformation(self._reference)
        g = self.input_geometry
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize(g["size"])
        resampler.SetOutputOrigin(g["origin"])
        resampler.SetOutputSpacing(g["spacing"])
        resampler.SetOutputDirection(g["direction"])
        resampler.SetInterpolator(interpolator)
        resampler.SetDefaultPixelValue(float(default_value))
        return resampler.Execute(on_grid)

    def _check_on_input_grid(self, image: sitk.Image, what: str) -> None:
        ok, why = same_geometry(image, self.input_geometry)
        if not ok:
            raise InputError(f"the {what} does not lie on the MRI's voxel grid ({why}); "
                             f"resample it onto the MRI first")


def grid_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Input axes behind (slices, rows, columns) and the sign (+1/-1) taking each to its target.

    The slice axis is the image axis closest to patient left-right (LPS x); of the two
    others, the one closest to superior-inferior (z) gives rows, the last gives columns.
    Targets: slices -x (left->right), rows -z (superior->inferior), columns +y (anterior->posterior).
    """
    d = np.asarray(direction, float).reshape(3, 3)  # column i = direction of image axis i
    slice_axis = int(np.argmax(np.abs(d[0])))
    others = [a for a in range(3) if a != slice_axis]
    row_axis = max(others, key=lambda a: abs(d[2, a]))
    col_axis = next(a for a in others if a != row_axis)
    signs = (-_sign(d[0, slice_axis]), -_sign(d[2, row_axis]), _sign(d[1, col_axis]))
    return (slice_axis, row_axis, col_axis), signs


def acquisition_plane(image: sitk.Image) -> str:
    """"sagittal", "axial" or "coronal": the plane normal to the image's slice-normal axis.

    The slice-normal is the axis with the largest spacing (thick slices); among axes of
    (within 1 %) equal spacing, the one with the fewest voxels (a 1 mm isotropic
    sagittal series has fewer sagittal slices than rows). The plane is named by the
    LPS axis that normal is closest to.
    """
    spacing = np.asarray(image.GetSpacing())
    size = np.asarray(image.GetSize())
    candidates = [a for a in range(3) if spacing[a] >= 0.99 * spacing.max()]
    normal_axis = min(candidates, key=lambda a: (size[a], a))
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    return _PLANE_OF_NORMAL[int(np.argmax(np.abs(d[:, normal_axis])))]


def to_model_grid(image: sitk.Image, spec: GridSpec = GridSpec(), intensities: bool = True,
                  shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> ModelGrid:
    """Resample a 3D MRI (any orientation) onto the model grid and normalise it.

    Geometry: in-plane spacing ``max(spec.spacing_mm, largest in-plane extent / size)``
    (isotropic, so the whole field of view fits), centred and zero-padded to
    ``size x size``; slices stay at the input's own positions unless that spacing is
    finer than ``spec.min_slice_spacing_mm``, then they are resampled to it, centred.
    An axis already at the grid's spacing is placed on the input's voxel centres so it
    is not interpolated at all.

    Intensity: ``(v - p1) / (p99 - p1)`` with the 1st and 99th percentiles of the input's
    voxels (min/max if those coincide), clipped to ``NORMALISED_CLIP``; padding outside
    the field of view is 0 (the level of the 1st percentile, i.e. dark background).
    Resampling is linear. ``intensities=False``: the geometry only (``slices`` None), for
    mapping results back (the sample slider's step), without reading the voxels.
    ``shift``: the grid moved by these fractions of a grid pixel along its columns, rows and
    slices (``benchmarks/border_refinement.py`` draws ensembles on shifted grids); runs use 0.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"to_model_grid needs a 3D image, got {image.GetDimension()}D")
    in_size = np.asarray(image.GetSize())
    in_spacing = np.asarray(image.GetSpacing(), float)
    in_direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    (slice_axis, row_axis, col_axis), signs = grid_axes(in_direction)

    inplane_extent = max(in_size[row_axis] * in_spacing[row_axis], in_size[col_axis] * in_spacing[col_axis])
    inplane_spacing = max(spec.spacing_mm, inplane_extent / spec.size)
    slice_spacing = max(in_spacing[slice_axis], spec.min_slice_spacing_mm)
    slice_span = (in_size[slice_axis] - 1) * in_spacing[slice_axis]
    n_slices = int(math.floor(slice_span / slice_spacing + 1e-6)) + 1

    # sitk axes of the grid: x = columns, y = rows, z = slices
    grid_axis_map = ((col_axis, signs[2], inplane_spacing, spec.size),
                     (row_axis, signs[1], inplane_spacing, spec.size),
                     (slice_axis, signs[0], slice_spacing, n_slices))
    start_index = np.zeros(3)  # continuous input index of grid voxel (0, 0, 0)
    steps = []  # input-index step per grid step, per grid axis
    for (axis, sign, spacing, count), offset in zip(grid_axis_map, shift):
        step = sign * spacing / in_spacing[axis]
        start = (in_size[axis] - 1) / 2 - step * (count - 1) / 2
        if abs(abs(step) - 1) < 1e-4:  # same spacing up to float32 header rounding
            start = math.floor(start + 1e-6)  # land on voxel centres: no interpolation
        start += offset * step
        start_index[axis] = start
        steps.append((axis, step, count))

    grid_direction = np.stack([sign * in_direction[:, axis] for axis, sign, _, _ in grid_axis_map], axis=1)
    grid_origin = np.asarray(image.GetOrigin()) + in_direction @ (start_index * in_spacing)
    reference = sitk.Image([int(spec.size), int(spec.size), n_slices], sitk.sitkUInt8)
    reference.SetOrigin(tuple(grid_origin))
    reference.SetSpacing((inplane_spacing, inplane_spacing, slice_spacing))
    reference.SetDirection(tuple(grid_direction.ravel()))

    fov = _field_of_view(start_index, steps, in_size)
    if intensities:
        low, high = _robust_range(image)
        raw = sitk.GetArrayFromImage(_resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.sitkLinear, 0.0))
        slices = np.clip((raw - low) / (high - low), *NORMALISED_CLIP).astype(np.float32)
        slices[~fov] = 0.0
        grid_image = sitk.GetImageFromArray(slices)
        grid_image.CopyInformation(reference)
    else:
        slices, grid_image, (low, high) = None, reference, (None, None)
    return ModelGrid(
        slices=slices, grid_image=grid_image, spec=spec, acquisition_plane=acquisition_plane(image),
        input_geometry=geometry_of(image), fov_mask=fov,
        intensity_percentiles=(low, high) if intensities else None,
        input_axes=(slice_axis, row_axis, col_axis), flipped=tuple(s < 0 for s in signs),
        _reference=reference,
    )


def _robust_range(image: sitk.Image) -> tuple[float, float]:
    voxels = sitk.GetArrayViewFromImage(image).ravel()
    stride = max(1, voxels.size // _PERCENTILE_SAMPLE)
    sample = voxels[::stride].astype(np.float64)
    low, high = np.percentile(sample, NORMALISATION_PERCENTILES)
    if high - low <= 1e-6 * max(1.0, abs(high)):
        # e.g. a mostly-empty volume: fall back to the full range
        low, high = float(voxels.min()), float(voxels.max())
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def _field_of_view(start_index: np.ndarray, steps: list, in_size: np.ndarray) -> np.ndarray:
    """Bool (slices, rows, cols): grid voxels whose centre falls inside an input voxel."""
    inside = []
    for axis, step, count in steps:  # grid x (columns), y (rows), z (slices)
        index = start_index[axis] + step * np.arange(count)
        inside.append((index >= -0.5) & (index < in_size[axis] - 0.5))
    cols, rows, slices = inside
    return slices[:, None, None] & rows[None, :, None] & cols[None, None, :]


def _resample(image: sitk.Image, reference: sitk.Image, interpolator: int, default: float) -> sitk.Image:
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def _sign(value: float) -> int:
    return -1 if value < 0 else 1
