"""The real-data measures of partial references (evaluation/partial_label_scores.py)."""

import math

import numpy as np

from SpineSegDiffLib.evaluation import partial_label_scores as pls


def _column_of_bodies() -> np.ndarray:
    """(z, y, x): three 10-voxel bodies along z (superior-inferior), 5-voxel gaps."""
    body = np.zeros((50, 30, 20), bool)
    for top in (5, 20, 35):
        body[top:top + 10, 5:15, 5:15] = True
    return body


def test_superior_axis_follows_the_direction():
    assert pls.superior_axis((1, 0, 0, 0, 1, 0, 0, 0, -1)) == 0  # sagittal stack stored z-first
    # an axial-like storage whose index axis 0 (x) runs superior-inferior
    assert pls.superior_axis((0, 0, 1, 0, 1, 0, 1, 0, 0)) == 2


def test_body_box_dice_ignores_posterior_elements_outside_the_boxes():
    body = _column_of_bodies()
    pred = body.copy()
    pred[5:45, 20:29, 8:12] = True  # "posterior elements" behind the boxes (y >= 17)
    assert pls.body_box_dice(pred, body) == 1.0
    pred[5:45, 15:17, 5:15] = True  # bone painted just behind the bodies, inside the grown boxes
    assert pls.body_box_dice(pred, body) < 1.0


def test_span_volume_ratio_counts_everything_in_the_bodies_span():
    body = _column_of_bodies()
    assert pls.span_volume_ratio(body, body, 0) == 1.0
    pred = body.copy()
    pred[5:45, 20:30, :] = True  # a slab of "muscle" as large as... inside the span
    ratio = pls.span_volume_ratio(pred, body, 0)
    assert math.isclose(ratio, (body.sum() + 40 * 10 * 20) / body.sum())
    pred2 = body.copy()
    pred2[46:, :, :] = True  # below the last body: not counted
    assert pls.span_volume_ratio(pred2, body, 0) == 1.0


def test_between_discs_is_the_body_between_two_discs_of_a_line():
    disc = np.zeros((60, 10, 10), bool)
    disc[10:14, 2:8, 2:8] = True
    disc[40:44, 2:8, 2:8] = True  # 26 voxels apart: one vertebral body
    between = pls.between_discs(disc, 0, (1.0, 1.0, 1.0))
    assert between[14:40, 2:8, 2:8].all() and between.sum() == 26 * 36
    far = pls.between_discs(disc, 0, (2.0, 1.0, 1.0))  # 52 mm apart: not neighbours
    assert not far.any()


def test_band_dice_scores_only_near_the_discs():
    ref = np.zeros((80, 10, 10), bool)
    ref[30:40, 2:8, 2:8] = True
    pred = ref.copy()
    pred[55:60] = True  # 15-20 rows below the discs: outside the band at 1 mm
    assert pls.band_dice(pred, ref, 0, (1.0, 1.0, 1.0)) == 1.0
    pred[45:48] = True  # 5-8 rows below: inside the band
    assert pls.band_dice(pred, ref, 0, (1.0, 1.0, 1.0)) < 1.0
