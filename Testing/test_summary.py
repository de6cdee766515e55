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
