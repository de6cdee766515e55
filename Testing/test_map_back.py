"""The slider step's fast kernels against the slow ones they replace: separable map-back vs
ITK's linear resampler, boxed vs whole maps, channel-wise labelmap vs argmax, one-call hole
filling vs one call per slice, the entropy table vs the entropy function."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.grid.geometry import GridSpec, to_model_grid
from SpineSegDiffLib.grid.map_back import LinearMap, axis_maps, linear_to_input
from SpineSegDiffLib.inference.postprocess import fill_holes_per_slice, labelmap_of_channels
from SpineSegDiffLib.model import levels

X, Y, Z = np.eye(3)  # LPS
ORIENTATIONS = {"sagittal": np.stack([X, Y, -Z], axis=1), "axial_flipped": np.stack([-X, -Y, Z], axis=1),
                "coronal": np.stack([X, -Z, Y], axis=1), "stored_si_ap_lr": np.stack([-Z, -Y, -X], axis=1)}


def _image(direction: np.ndarray, spacing, size) -> sitk.Image:
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.random(tuple(reversed(size))).astype(np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    image.SetOrigin((3.7, -21.2, 40.9))
    return image


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("spacing", [(0.9, 1.1, 3.3), (2.0, 2.0, 2.0), (0.45, 0.6, 4.0)])
def test_separable_map_back_equals_itk_linear_resampling(orientation, spacing):
    image = _image(ORIENTATIONS[orientation], spacing, (23, 41, 17))
    grid = to_model_grid(image, GridSpec(spacing_mm=1.5, size=32, min_slice_spacing_mm=2.0), intensities=False)
    rng = np.random.default_rng(2)
    values = np.zeros((2, *grid.shape), np.float32)
    n = grid.shape[0]
    part = slice(n // 4, max(n // 4 + 1, n - n // 4))  # some slices, and a box of rows and columns
    values[:, part, 5:20, 9:27] = rng.random((2, part.stop - part.start, 15, 18))
    maps = axis_maps(grid)
    shape = tuple(reversed(image.GetSize()))
    ours = linear_to_input(values, maps, shape)
    for c in range(2):
        itk = sitk.GetArrayFromImage(grid.to_input_geometry(values[c], interpolation="linear"))
        assert np.abs(ours[c] - itk).max() < 1e-6
        assert np.array_equal(ours[c] != 0, itk != 0)  # the same voxels read the grid
    lazy = LinearMap.of(values, maps, shape)  # only where the grid is not 0: the same numbers
    assert np.prod([b.stop - b.start for b in lazy.box]) < np.prod(shape)
    by_slabs = np.zeros_like(ours)
    for box, part in lazy.slabs():
        by_slabs[(slice(None), *box)] = part
    for c in range(2):
        assert np.array_equal(lazy.full(c), ours[c]) and np.array_equal(by_slabs[c], ours[c])
        corner = tuple(slice(n // 3, n) for n in shape)
        assert np.array_equal(lazy.crop(corner, c), ours[c][corner])


def test_labelmap_of_channels_equals_argmax_with_ties():
    rng = np.random.default_rng(3)
    probabilities = rng.choice(np.array([0.2, 0.6, 0.6, 0.9], np.float32), size=(3, 9, 11, 7))
    masks = probabilities > 0.5
    masks[:, 0] = False
    scores = np.where(masks, probabilities, -1.0)
    expected = np.where(masks.any(axis=0), scores.argmax(axis=0) + 1, 0).astype(np.uint8)
    assert np.array_equal(labelmap_of_channels(masks, probabilities), expected)


def test_hole_filling_in_one_call_equals_one_call_per_slice():
    rng = np.random.default_rng(4)
    for trial in range(20):
        mask = rng.random((6, 19, 23)) < rng.uniform(0.2, 0.8)
        mask[trial % 6] = False
        expected = np.zeros_like(mask)
        for i in range(mask.shape[0]):
            filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask[i].astype(np.uint8)), fullyConnected=False,
                                         foregroundValue=1.0)
            expected[i] = sitk.GetArrayViewFromImage(filled) > 0
        assert np.array_equal(fill_holes_per_slice(mask), expected), trial


@pytest.mark.parametrize("samples", [1, 2, 5, 15])
def test_entropy_table_equals_the_entropy_of_the_mean(samples):
    rng = np.random.default_rng(samples)
    drawn = [rng.integers(0, 256, (3, 4, 3, 16, 16), dtype=np.uint8) for _ in range(samples)]
    stats = levels.statistics_of_levels(drawn, second_order=False)
    assert stats.mean_square is None and stats.mean_entropy is None
    assert np.array_equal(levels.entropy_of_mean(stats), levels.binary_entropy(stats.mean_probability).max(axis=0))
    full = levels.statistics_of_levels(drawn)
    assert np.array_equal(full.mean_probability, stats.mean_probability)


def _grid_values(orientation: str):
    image = _image(ORIENTATIONS[orientation], (0.9, 1.1, 3.3), (23, 41, 17))
    grid = to_model_grid(image, GridSpec(spacing_mm=1.5, size=32, min_slice_spacing_mm=2.0), intensities=False)
    values = np.zeros((3, *grid.shape), np.float32)
    values[:, :, 4:22, 6:25] = np.random.default_rng(3).random((3, grid.shape[0], 18, 19))
    return values, axis_maps(grid), tuple(reversed(image.GetSize()))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_outer_axis_by_gather_or_by_loop_gives_the_same_bits(orientation, monkeypatch):
    from SpineSegDiffLib.grid import map_back

    values, maps, shape = _grid_values(orientation)
    monkeypatch.setattr(map_back, "_GATHER_PLANE", 0)  # every plane looped
    looped = linear_to_input(values, maps, shape)
    monkeypatch.setattr(map_back, "_GATHER_PLANE", 10**9)  # every plane gathered
    assert np.array_equal(linear_to_input(values, maps, shape), looped)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_slabs_narrowed_to_a_support_cover_every_voxel_that_reads_it(orientation):
    from SpineSegDiffLib.grid.map_back import slabs_in_box

    values, maps, shape = _grid_values(orientation)
    support = np.zeros(values.shape[1:], bool)
    support[1:3, 8:11, 10:12] = True  # a small piece of the grid
    support[-2:, 15:17, 20:24] = True  # and another, elsewhere
    inside = np.where(support, values, 0.0).astype(np.float32)
    whole = linear_to_input(inside, maps, shape)
    assembled = np.zeros_like(whole)
    covered = np.zeros(shape, bool)
    everything = tuple(slice(0, n) for n in shape)
    for box, part in slabs_in_box(values, maps, everything, planes=4, support=support):
        assert np.array_equal(part, linear_to_input(values, maps, shape)[(slice(None), *box)])  # the same bits
        assembled[(slice(None), *box)] = linear_to_input(inside, maps, shape)[(slice(None), *box)]
        covered[box] = True
    assert np.array_equal(assembled, whole)  # nothing that reads the support is left out
    assert 0 < covered.mean() < 0.5  # and most of the volume is skipped
