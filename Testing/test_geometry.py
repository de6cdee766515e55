"""Model grid: orientation, exact and resampled round trips, normalisation, field of view."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.grid.geometry import NORMALISED_CLIP, GridSpec, to_model_grid
from SpineSegDiffLib.data.imageio import read_label, read_mri, same_geometry

# ---------------------------------------------------------------- test images


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


X, Y, Z = np.eye(3)  # LPS: +x left, +y posterior, +z superior
# image axis directions (columns of the direction matrix) for common acquisitions
SAGITTAL_REAL = np.stack([X, Y, -Z], axis=1)  # as ../shared/data/real: (LR, AP, SI)
SAGITTAL_STORED_SI_AP_LR = np.stack([-Z, -Y, -X], axis=1)  # axes stored in another order
AXIAL = np.stack([X, Y, Z], axis=1)
AXIAL_FLIPPED = np.stack([-X, -Y, Z], axis=1)
CORONAL = np.stack([X, -Z, Y], axis=1)
OBLIQUE_SAGITTAL = rotation(2, 15) @ rotation(1, 10) @ SAGITTAL_REAL  # double oblique
OBLIQUE_AXIAL = rotation(0, 20) @ AXIAL  # tilted along a disc


def make_image(direction: np.ndarray, spacing, size, centre=(12.3, -40.1, 250.7)) -> sitk.Image:
    """An empty float32 image centred on ``centre`` (LPS mm)."""
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    half_extent = (np.asarray(size) - 1) / 2 * np.asarray(spacing)
    image.SetOrigin(tuple(np.asarray(centre) - np.asarray(direction) @ half_extent))
    return image


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, numpy order (z, y, x, 3)."""
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)  # (x, y, z, 3)
    d = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    points = np.asarray(image.GetOrigin()) + index @ d.T
    return points.transpose(2, 1, 0, 3)


def balls_label(image: sitk.Image, balls: list[tuple[tuple[float, float, float], float]]) -> sitk.Image:
    """Label k+1 inside ball k, given as (offset from the image centre in LPS mm, radius)."""
    points = physical_points(image)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    labels = np.zeros(points.shape[:3], np.uint8)
    for value, (offset, radius) in enumerate(balls, start=1):
        labels[np.linalg.norm(points - centre - offset, axis=-1) <= radius] = value
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def mri_from_labels(label: sitk.Image, seed: int = 0) -> sitk.Image:
    """Bright structures on a dim, noisy background."""
    values = sitk.GetArrayFromImage(label).astype(np.float32)
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(100 + 150 * values + rng.normal(0, 5, values.shape).astype(np.float32))
    image.CopyInformation(label)
    return image


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# ---------------------------------------------------------------- GridSpec


@pytest.mark.parametrize("kwargs", [{"size": 100}, {"size": 0}, {"spacing_mm": 0.0},
                                    {"min_slice_spacing_mm": -1.0}, {"spacing_mm": float("nan")}])
def test_grid_spec_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        GridSpec(**kwargs)


# ---------------------------------------------------------------- orientation

ORIENTATIONS = {
    # name: (direction, spacing, expected acquisition plane)
    "sagittal_real_layout": (SAGITTAL_REAL, (4.0, 1.0, 1.0), "sagittal"),
    "sagittal_other_axis_order": (SAGITTAL_STORED_SI_AP_LR, (1.0, 1.0, 4.0), "sagittal"),
    "axial": (AXIAL, (1.0, 1.0, 4.0), "axial"),
    "axial_flipped": (AXIAL_FLIPPED, (1.0, 1.0, 4.0), "axial"),
    "coronal": (CORONAL, (1.0, 1.0, 4.0), "coronal"),
    "oblique_sagittal": (OBLIQUE_SAGITTAL, (4.0, 1.0, 1.0), "sagittal"),
    "oblique_axial": (OBLIQUE_AXIAL, (1.0, 1.0, 4.0), "axial"),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_markers_land_in_the_right_rows_columns_and_slices(name):
    direction, spacing, plane = ORIENTATIONS[name]
    size = [int(round(84 / s)) + 1 for s in spacing]  # an 84 mm cube, odd sizes
    markers = [((0, 0, 0), 8), ((0, 0, 26), 8), ((0, -26, 0), 8), ((26, 0, 0), 9)]  # centre, S, A, L
    label = balls_label(make_image(direction, spacing, size), markers)
    image = mri_from_labels(label)

    grid = to_model_grid(image, GridSpec(spacing_mm=1.0, size=96))
    on_grid = grid.labels_to_grid(label)
    assert grid.acquisition_plane == plane
    assert grid.reoriented == (plane != "sagittal")
    centroid = {v: np.argwhere(on_grid == v).mean(axis=0) for v in (1, 2, 3, 4)}  # (slice, row, col)
    centre, superior, anterior, left = centroid[1], centroid[2], centroid[3], centroid[4]
    # 26 mm away is 26 grid pixels in-plane (>= 24 when tilted by <= 20 degrees),
    # >= 6 slices of <= 4 mm through-plane
    assert superior[1] < centre[1] - 20  # superior -> top rows
    assert anterior[2] < centre[2] - 20  # anterior -> first columns
    assert left[0] < centre[0] - 5  # slices run left -> right
    # and each marker sits where the grid image's own geometry says (an oblique grid is
    # not rotated, so its markers are off-axis by 26 mm x sin(tilt)); 1 index of slack
    # for voxelising the balls
    grid_axes = np.asarray(grid.grid_image.GetDirection()).reshape(3, 3)
    grid_spacing = np.asarray(grid.grid_image.GetSpacing())
    for marker, (offset, _) in zip((superior, anterior, left), markers[1:]):
        expected = (grid_axes.T @ np.asarray(offset, float) / grid_spacing)[::-1]  # (slice, row, col)
        np.testing.assert_allclose(marker - centre, expected, atol=1.0)
    # the intensities moved with the labels: bright where the markers are
    assert grid.slices[on_grid > 0].mean() > grid.slices[(on_grid == 0) & grid.fov_mask].mean() + 0.5


# ---------------------------------------------------------------- exact round trip

EXACT_CASES = {
    "real_layout_odd": (SAGITTAL_REAL, (4.0, 1.0, 1.0), (9, 45, 37)),
    "real_layout_even": (SAGITTAL_REAL, (2.5, 1.0, 1.0), (12, 64, 50)),
    "other_axis_order": (SAGITTAL_STORED_SI_AP_LR, (1.0, 1.0, 4.0), (53, 40, 11)),
    "double_oblique_17deg": (rotation(2, 17) @ rotation(0, -12) @ SAGITTAL_REAL, (4.0, 1.0, 1.0), (10, 47, 60)),
}


@pytest.mark.parametrize("name", EXACT_CASES)
def test_sagittal_at_grid_spacing_round_trips_exactly(name):
    # in-plane spacing == grid spacing and slices >= min_slice_spacing: the grid sits on
    # the input's voxel centres, so nearest neighbour there and back is the identity.
    direction, spacing, size = EXACT_CASES[name]
    image = make_image(direction, spacing, size)
    rng = np.random.default_rng(1)
    labels = ndimage.median_filter(rng.integers(0, 4, size[::-1]).astype(np.uint8), size=3)
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    image = mri_from_labels(label)

    grid = to_model_grid(image, GridSpec(spacing_mm=1.0, size=64))
    slice_axis = int(np.argmax(spacing))
    assert grid.slices.shape == (size[slice_axis], 64, 64)  # one grid slice per input slice
    assert grid.acquisition_plane == "sagittal" and not grid.reoriented
    assert np.count_nonzero(grid.fov_mask) == np.prod(size)  # every input voxel, once

    back = grid.to_input_geometry(grid.labels_to_grid(label), interpolation="nearest")
    assert back.GetPixelID() == sitk.sitkUInt8
    assert same_geometry(back, image, tol=1e-9) == (True, "")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)

    # intensities too (linear at exact voxel centres; tolerance only for float rounding)
    values = grid.image_to_grid(image)
    low, high = grid.intensity_percentiles
    expected = np.clip((values - low) / (high - low), *NORMALISED_CLIP)
    np.testing.assert_allclose(grid.slices[grid.fov_mask], expected[grid.fov_mask], atol=1e-5)
    back_values = grid.to_input_geometry(values, interpolation="linear")
    np.testing.assert_allclose(sitk.GetArrayFromImage(back_values), sitk.GetArrayFromImage(image),
                               rtol=1e-4)


# ---------------------------------------------------------------- resampled round trip

RESAMPLED_CASES = {
    # sagittal 0.6 x 0.6 in-plane, 4 mm left-right; 150 mm FOV > 128 mm grid: downsampled
    "sagittal_0.6x0.6x4": (SAGITTAL_REAL, (4.0, 0.6, 0.6), (15, 251, 233)),
    "axial_0.7x0.7x4": (AXIAL, (0.7, 0.7, 4.0), (111, 97, 21)),
    "coronal_0.7x4x0.7": (CORONAL, (0.7, 0.7, 4.0), (101, 117, 19)),
    "oblique_axial_20deg": (OBLIQUE_AXIAL, (0.7, 0.7, 4.0), (103, 99, 21)),
}


@pytest.mark.parametrize("name", RESAMPLED_CASES)
def test_resampled_round_trip_keeps_geometry_and_shapes(name):
    direction, spacing, size = RESAMPLED_CASES[name]
    balls = [((-12, 0, 10), 17), ((14, 6, -6), 16), ((0, -4, -22), 15)]
    label = balls_label(make_image(direction, spacing, size), balls)
    image = mri_from_labels(label)

    spec = GridSpec(spacing_mm=1.0, size=128, min_slice_spacing_mm=2.0)
    grid = to_model_grid(image, spec)
    slice_spacing = grid.grid_image.GetSpacing()[2]
    assert slice_spacing == max(spacing[int(np.argmax(np.abs(direction[0])))], spec.min_slice_spacing_mm)
    if name.startswith("sagittal"):
        assert grid.slices.shape[0] == size[0]  # 4 mm sagittal: slices kept as they are
        assert grid.grid_image.GetSpacing()[0] == pytest.approx(max(size[1:]) * 0.6 / 128)

    back = grid.to_input_geometry(grid.labels_to_grid(label), interpolation="nearest")
    assert same_geometry(back, image, tol=1e-9) == (True, "")
    result, truth = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label)
    # Nearest neighbour through a coarser grid moves a boundary by at most half a grid
    # voxel plus half an input voxel; balls of 15+ mm radius are >> those 1-2 mm, so
    # Dice >= 0.95, and every disagreeing voxel lies within that distance of a boundary.
    max_shift = (max(grid.grid_image.GetSpacing()) + max(spacing)) / 2
    sampling = np.asarray(spacing)[::-1]
    for value in (1, 2, 3):
        assert dice(result == value, truth == value) >= 0.95
        inside = truth == value
        to_boundary = np.where(inside, ndimage.distance_transform_edt(inside, sampling=sampling),
                               ndimage.distance_transform_edt(~inside, sampling=sampling))
        wrong = (result == value) != inside
        assert np.all(to_boundary[wrong] <= max_shift + 1e-6)


def test_round_trip_keeps_what_the_grid_resolves_and_loses_what_it_cannot():
    image = make_image(SAGITTAL_REAL, (1.0, 1.0, 1.0), (40, 96, 96))
    truth = sitk.GetArrayFromImage(balls_label(image, [((0, 0, 0), 14)])) == 1
    before = truth.copy()
    grid = to_model_grid(image, GridSpec(spacing_mm=3.0, size=32, min_slice_spacing_mm=2.0))

    ball = grid.round_trip(truth)
    assert ball.shape == truth.shape and ball.dtype == bool
    assert dice(ball, truth) >= 0.9  # a 28 mm ball survives a 3 mm grid
    np.testing.assert_array_equal(truth, before)  # the input is untouched
    # a 1 mm sheet falls between the 3 mm grid's sample points at two positions out of three
    survived = []
    for row in (47, 48, 49):
        sheet = np.zeros_like(truth)
        sheet[:, row, :] = True
        survived.append(bool(grid.round_trip(sheet).any()))
    assert survived.count(True) == 1, survived



def test_shifted_grid_moves_by_the_fraction_of_a_pixel_asked_for():
    image = make_image(OBLIQUE_SAGITTAL, (1.0, 1.0, 1.0), (40, 96, 96))
    spec = GridSpec(spacing_mm=3.0, size=32, min_slice_spacing_mm=2.0)
    base = to_model_grid(image, spec)
    shift = np.array([0.5, 0.25, 1.0])  # grid columns, rows, slices
    moved = to_model_grid(image, spec, shift=tuple(shift))
    for what in ("GetSpacing", "GetDirection", "GetSize"):
        assert getattr(moved.grid_image, what)() == getattr(base.grid_image, what)()
    direction = np.asarray(base.grid_image.GetDirection()).reshape(3, 3)
    offset = np.asarray(moved.grid_image.GetOrigin()) - np.asarray(base.grid_image.GetOrigin())
    np.testing.assert_allclose(offset, direction @ (shift * np.asarray(base.grid_image.GetSpacing())), atol=1e-6)


def test_a_third_of_a_pixel_shift_samples_the_sheet_the_grid_missed():
    image = make_image(SAGITTAL_REAL, (1.0, 1.0, 1.0), (40, 96, 96))
    spec = GridSpec(spacing_mm=3.0, size=32, min_slice_spacing_mm=2.0)
    survivors = []
    for shift in ((0.0, 0.0, 0.0), (1 / 3, 0.0, 0.0)):  # columns run anterior -> posterior (numpy axis 1)
        grid = to_model_grid(image, spec, shift=shift)
        kept = []
        for row in (47, 48, 49):
            sheet = np.zeros(tuple(reversed(image.GetSize())), bool)
            sheet[:, row, :] = True
            kept.append(bool(grid.round_trip(sheet).any()))
        assert kept.count(True) == 1, kept
        survivors.append(kept.index(True))
    assert survivors[0] != survivors[1]

# ---------------------------------------------------------------- field of view, normalisation


def test_whole_field_of_view_fits_and_padding_is_zero():
    image = make_image(SAGITTAL_REAL, (3.0, 0.8, 0.5), (6, 301, 181))  # 240 x 90 mm in-plane
    corners = sitk.GetArrayFromImage(image).astype(np.uint8)
    # 5 x 5 mm patches (> one 3.8 mm grid pixel) in the 4 in-plane corners; numpy (SI, AP, LR)
    patch_si, patch_ap = 10, 7
    corners[:patch_si, :patch_ap] = 1
    corners[:patch_si, -patch_ap:] = 2
    corners[-patch_si:, :patch_ap] = 3
    corners[-patch_si:, -patch_ap:] = 1
    label = sitk.GetImageFromArray(corners)
    label.CopyInformation(image)
    rng = np.random.default_rng(2)
    mri = sitk.GetImageFromArray(rng.gamma(2.0, 50.0, corners.shape).astype(np.float32))
    mri.CopyInformation(image)

    grid = to_model_grid(mri, GridSpec(spacing_mm=1.0, size=64))
    assert grid.grid_image.GetSpacing()[:2] == pytest.approx((301 * 0.8 / 64,) * 2)
    on_grid = grid.labels_to_grid(label)
    assert set(np.unique(on_grid)) == {0, 1, 2, 3}  # no corner was cut off
    rows = np.flatnonzero(grid.fov_mask.any(axis=(0, 2)))
    cols = np.flatnonzero(grid.fov_mask.any(axis=(0, 1)))
    # the long axis (240 mm anterior-posterior: columns) fills the grid, the short one
    # (90 mm superior-inferior: rows) is centred in zero padding
    assert len(cols) == 64 and 0 < rows[0] and rows[-1] < 63
    assert abs(rows[0] - (63 - rows[-1])) <= 1
    assert np.all(grid.slices[~grid.fov_mask] == 0)

    voxels = sitk.GetArrayFromImage(mri)
    assert grid.intensity_percentiles == pytest.approx(tuple(np.percentile(voxels, [1, 99])), rel=1e-6)
    inside = grid.slices[grid.fov_mask]
    assert NORMALISED_CLIP[0] <= inside.min() and inside.max() <= NORMALISED_CLIP[1]
    low, high = grid.intensity_percentiles
    expected = np.clip((grid.image_to_grid(mri) - low) / (high - low), *NORMALISED_CLIP)
    np.testing.assert_allclose(inside, expected[grid.fov_mask], atol=1e-5)
    assert grid.slices.dtype == np.float32


# ---------------------------------------------------------------- multi-channel and misuse


def test_multichannel_arrays_come_back_as_vector_images():
    image = mri_from_labels(balls_label(make_image(AXIAL, (0.9, 0.9, 4.0), (71, 67, 17)), [((0, 0, 0), 15)]))
    grid = to_model_grid(image, GridSpec(size=96))
    n = grid.slices.shape[0]
    probabilities = np.random.default_rng(3).random((n, 3, 96, 96)).astype(np.float32)

    vector = grid.to_input_geometry(probabilities, interpolation="linear")
    assert vector.GetNumberOfComponentsPerPixel() == 3
    assert same_geometry(vector, image, tol=1e-9)[0]
    for c in range(3):
        scalar = grid.to_input_geometry(probabilities[:, c], interpolation="linear")
        assert scalar.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_allclose(sitk.GetArrayFromImage(vector)[..., c], sitk.GetArrayFromImage(scalar),
                                   atol=1e-6)
    single = grid.to_input_geometry(probabilities[:, :1], interpolation="linear")
    assert single.GetNumberOfComponentsPerPixel() == 1

    with pytest.raises(ValueError, match="array"):
        grid.to_input_geometry(probabilities[:, 0, :64])
    with pytest.raises(ValueError, match="nearest"):
        grid.to_input_geometry(probabilities[:, 0], interpolation="nearest")
    moved = make_image(AXIAL, (0.9, 0.9, 4.0), (71, 67, 17), centre=(0, 0, 0))
    with pytest.raises(InputError, match="origin"):
        grid.labels_to_grid(sitk.Cast(moved, sitk.sitkUInt8))


def test_real_sagittal_case_round_trips(real_data_dir):
    image_path = real_data_dir / "images" / "VB2_02.nii.gz"
    if not image_path.is_file():
        pytest.skip("case VB2_02 not in the real data folder")
    image = read_mri(image_path)
    label = read_label(real_data_dir / "masks" / "VB2_02.nii.gz", image, image_path)
    grid = to_model_grid(image)
    assert grid.acquisition_plane == "sagittal"
    # 1 mm slices are finer than the 2 mm minimum: every other position, centred
    assert grid.slices.shape[0] == (image.GetSize()[0] - 1) // 2 + 1
    back = grid.to_input_geometry(grid.labels_to_grid(label))
    assert same_geometry(back, image, tol=1e-9)[0]
    result, truth = sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(label) > 0
    # ~3 mm grid and 2 mm slices vs 1 mm voxels on 30 mm vertebral bodies
    assert dice(result, truth) >= 0.9
