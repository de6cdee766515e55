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
    """A small volume on a 32-pixel model grid, a labelmap and fused probabilities (C, n, H, W) there."""
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
    probabilities = rng.random((3, *grid.shape)).astype(np.float32)
    labels = np.zeros(tuple(reversed(image.GetSize())), np.uint8)
    labels[3:7, 10:20, 12:25] = 2
    labels[4:6, 22:26, 14:20] = 3
    whole = tuple(slice(0, n) for n in labels.shape)
    return image, grid, grid_labels, probabilities, BoxedArray(labels, whole, labels.shape), labels


def test_the_summary_reads_the_uncertainty_on_the_model_grid():
    from scipy import ndimage

    from SpineSegDiffLib.inference.probability_entropy import probability_entropy

    image, grid, grid_labels, probabilities, boxed, labels = _grid_and_result()
    out = summary.structure_summary(image, boxed, grid, grid_labels, probabilities)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    assert out["spinal_canal"]["volume_ml"] == 0 and out["spinal_canal"]["peak_uncertainty_lps"] is None
    for key, value in (("vertebrae", 2), ("discs", 3)):
        entry = out[key]
        assert entry["volume_ml"] == round(np.count_nonzero(labels == value) * voxel_ml, 3)  # the input's voxels
        region = ndimage.binary_dilation(grid_labels == value)  # face-connected, as the summary's
        u = probability_entropy(probabilities[value - 1])  # the entropy of the probability, on the grid
        assert entry["mean_uncertainty"] == round(float(u[region].mean()), 5)
        smooth = ndimage.gaussian_filter(u.astype(np.float64), 1.0, mode="reflect")
        z, y, x = np.unravel_index(int(np.argmax(np.where(region, smooth, -1.0))), u.shape)
        expected = grid.grid_image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        np.testing.assert_allclose(entry["peak_uncertainty_lps"], expected, atol=1e-3)


def test_a_structure_only_on_the_grid_has_no_uncertainty_entry():
    image, grid, grid_labels, probabilities, boxed, labels = _grid_and_result()
    labels[labels == 3] = 0  # too small to survive on the input's voxels
    out = summary.structure_summary(image, boxed, grid, grid_labels, probabilities)
    assert out["discs"] == {"label": 3, "name": out["discs"]["name"], "volume_ml": 0.0,
                            "mean_uncertainty": 0.0, "peak_uncertainty_lps": None}


def test_the_uncertainty_is_the_entropy_of_the_probability_mapped_back():
    from SpineSegDiffLib.grid.map_back import axis_maps, linear_to_input
    from SpineSegDiffLib.inference.fusion import GridPrediction
    from SpineSegDiffLib.inference.on_input import labelmap_on_input, result_on_input
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.levels import binary_entropy

    image, grid, grid_labels, _, _, _ = _grid_and_result(seed=5)
    rng = np.random.default_rng(5)
    channels = np.stack([grid_labels == v for v in (1, 2, 3)], axis=1).astype(np.float32)
    fused = np.clip(channels * 0.8 + 0.1 + rng.normal(0, 0.08, channels.shape), 0, 1).astype(np.float32)
    result = result_on_input(image, grid, GridPrediction(fused, None), SegmentSettings(), 5)
    probabilities = np.stack([result.probability_map.full(c) for c in range(3)])
    # the probabilities mapped back are the decided grid probabilities, linearly
    assert np.array_equal(probabilities, linear_to_input(result.probability_map.grid_values, axis_maps(grid),
                                                         result.labels.shape))
    exact = binary_entropy(probabilities.astype(np.float64))
    assert np.abs(result.combined_uncertainty - exact.max(axis=0)).max() < 2e-4
    per_structure = np.stack([sitk_array(u) for u in result.structure_uncertainty])
    assert np.abs(per_structure - exact).max() < 2e-4
    # one bit on the 0.5 level set: the most uncertain voxels lie on the masks' borders
    border = np.abs(probabilities - 0.5).min(axis=0) < 0.02
    assert border.any() and (result.combined_uncertainty[border] > 0.99).all()
    # the labelmap is the same, bit for bit, with or without the uncertainty's pass
    alone = labelmap_on_input(fused, grid, image, SegmentSettings().min_component_mm3)
    assert alone.combined_uncertainty is None and np.array_equal(alone.labelmap, result.labels)
    assert np.array_equal(result.grid_labels, grid_labels)  # the decisions the summary reads
    assert result.labels.any()


def sitk_array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def test_the_entropy_table_is_within_2e4_bits_of_the_logarithms():
    from SpineSegDiffLib.inference.probability_entropy import most_uncertain, probability_entropy
    from SpineSegDiffLib.model.levels import binary_entropy

    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(200_000), rng.random(1000) * 1e-4, [0.0, 1.0, 0.5, 1e-7, 1 - 1e-7]])
    assert np.abs(probability_entropy(p) - binary_entropy(p)).max() < 2e-4
    assert probability_entropy(np.array([0.0, 1.0, 0.5])).tolist() == [0.0, 0.0, 1.0]
    channels = rng.random((3, 4, 5, 6)).astype(np.float32)
    out = np.full((6, 5, 6), -1.0, np.float32)
    most_uncertain(channels, out=out[1:5])
    assert np.abs(out[1:5] - binary_entropy(channels.astype(np.float64)).max(axis=0)).max() < 2e-4
    assert (out[0] == -1).all() and (out[5] == -1).all()  # only where asked
