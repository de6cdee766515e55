"""The run summary's peak of smoothed uncertainty: computed piecewise (slabs, region boxes)
and the same, bit for bit, as smoothing the whole array; near scipy's Gaussian."""

from __future__ import annotations

import numpy as np
import pytest

from SpineSegDiffLib.inference import summary


def _whole_array_peak(values: np.ndarray, region: np.ndarray) -> tuple[int, ...]:
    """The reference: pad every axis (mirrored), smooth the whole array axis by axis, first maximum."""
    smooth = np.pad(values.astype(np.float64), summary._GAUSS_RADIUS, mode="symmetric")
    for axis, n in enumerate(values.shape):
        smooth = summary._taps(smooth, axis, n)
    scores = np.where(region, smooth.astype(np.float32), np.float32(-1.0))
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))


@pytest.mark.parametrize("seed", range(6))
def test_piecewise_peak_equals_the_whole_array_peak(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 40)), int(rng.integers(5, 30)), int(rng.integers(5, 30)))
    values = rng.random(shape).astype(np.float32) ** 3
    region = np.zeros(shape, bool)
    for _ in range(3):  # a few blobs, some at the edges, leaving slabs and rows without region
        lo = [int(rng.integers(0, n)) for n in shape]
        region[tuple(slice(a, a + int(rng.integers(1, 6))) for a in lo)] = True
    assert summary._peak_of_smoothed(values, region) == _whole_array_peak(values, region)


def test_the_first_peak_wins_on_ties_across_slabs():
    values = np.zeros((40, 9, 9), np.float32)
    values[5, 4, 4] = values[30, 4, 4] = 1.0  # the same peak in slab 0 and slab 1
    region = np.ones(values.shape, bool)
    assert summary._peak_of_smoothed(values, region) == (5, 4, 4) == _whole_array_peak(values, region)


def test_smoothing_is_scipys_gaussian():
    from scipy import ndimage

    rng = np.random.default_rng(9)
    values = rng.random((12, 15, 11)).astype(np.float32)
    ours = np.pad(values.astype(np.float64), summary._GAUSS_RADIUS, mode="symmetric")
    for axis, n in enumerate(values.shape):
        ours = summary._taps(ours, axis, n)
    assert np.abs(ours - ndimage.gaussian_filter(values.astype(np.float64), 1.0, mode="reflect")).max() < 1e-12


def _grid_and_result(seed: int = 3):
    """A small oblique-free volume on a 32-pixel model grid, a labelmap and uncertainty there."""
    import SimpleITK as sitk

    from SpineSegDiffLib.grid.geometry import GridSpec, to_model_grid
    from SpineSegDiffLib.grid.map_back import BoxedArray

    image = sitk.Image(40, 36, 10, sitk.sitkFloat32)  # x, y, z; z the sagittal slices
    image.SetSpacing((0.8, 0.9, 3.0))
    image.SetOrigin((-12.0, 4.0, 30.0))
    grid = to_model_grid(image, GridSpec(spacing_mm=2.0, size=32), intensities=False)
    rng = np.random.default_rng(seed)
    grid_labels = np.zeros(grid.shape, np.uint8)
    grid_labels[2:6, 8:20, 10:18] = 2
    grid_labels[3:5, 21:25, 12:16] = 3
    uncertainty = rng.random((grid.shape[0], 3, *grid.shape[1:])).astype(np.float32) ** 3
    labels = np.zeros(tuple(reversed(image.GetSize())), np.uint8)
    labels[3:7, 10:20, 12:25] = 2
    labels[4:6, 22:26, 14:20] = 3
    whole = tuple(slice(0, n) for n in labels.shape)
    return image, grid, grid_labels, uncertainty, BoxedArray(labels, whole, labels.shape), labels


def test_the_summary_reads_the_uncertainty_on_the_model_grid():
    from scipy import ndimage

    image, grid, grid_labels, uncertainty, boxed, labels = _grid_and_result()
    out = summary.structure_summary(image, boxed, grid, grid_labels, uncertainty)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    assert out["spinal_canal"]["volume_ml"] == 0 and out["spinal_canal"]["peak_uncertainty_lps"] is None
    for key, value in (("vertebrae", 2), ("discs", 3)):
        entry = out[key]
        assert entry["volume_ml"] == round(np.count_nonzero(labels == value) * voxel_ml, 3)  # the input's voxels
        region = ndimage.binary_dilation(grid_labels == value)  # face-connected, as the summary's
        u = uncertainty[:, value - 1]
        assert entry["mean_uncertainty"] == round(float(u[region].mean()), 5)
        smooth = ndimage.gaussian_filter(u.astype(np.float64), 1.0, mode="reflect")
        z, y, x = np.unravel_index(int(np.argmax(np.where(region, smooth, -1.0))), u.shape)
        expected = grid.grid_image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        np.testing.assert_allclose(entry["peak_uncertainty_lps"], expected, atol=1e-3)


def test_a_structure_only_on_the_grid_has_no_uncertainty_entry():
    image, grid, grid_labels, uncertainty, boxed, labels = _grid_and_result()
    labels[labels == 3] = 0  # too small to survive on the input's voxels
    out = summary.structure_summary(image, boxed, grid, grid_labels, uncertainty)
    assert out["discs"] == {"label": 3, "name": out["discs"]["name"], "volume_ml": 0.0,
                            "mean_uncertainty": 0.0, "peak_uncertainty_lps": None}


def test_the_combined_map_is_the_grid_maximum_mapped_back():
    from SpineSegDiffLib.grid.map_back import axis_maps, linear_to_input
    from SpineSegDiffLib.inference.fusion import GridPrediction
    from SpineSegDiffLib.inference.on_input import result_on_input
    from SpineSegDiffLib.inference.settings import SegmentSettings

    image, grid, grid_labels, uncertainty, _, _ = _grid_and_result(seed=5)
    probabilities = np.moveaxis(np.stack([grid_labels == v for v in (1, 2, 3)]), 0, 1).astype(np.float32)
    probabilities = np.clip(probabilities * 0.9 + 0.05, 0, 1)
    result = result_on_input(image, grid, GridPrediction(probabilities, uncertainty), SegmentSettings(), 5)
    shape = result.labels.shape
    expected = linear_to_input(uncertainty.max(axis=1)[None], axis_maps(grid), shape)[0]
    assert np.array_equal(result.combined_uncertainty, expected)
    per_structure = np.stack([result.uncertainty_maps.full(c) for c in range(3)])
    # interpolating the maximum is never below the maximum of the interpolated maps
    assert (result.combined_uncertainty >= per_structure.max(axis=0) - 1e-6).all()
    assert (result.combined_uncertainty > per_structure.max(axis=0) + 0.01).any()
    assert np.array_equal(result.grid_labels, grid_labels)  # the decisions the summary reads
