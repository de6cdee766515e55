"""Level labels and per-level measurements on phantoms, against the generator's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values
from SpineSegDiffLib.measure.case import level_accuracy, measure_case
from SpineSegDiffLib.measure.levels import label_levels
from SpineSegDiffLib.measure.measurements import measure_levels

# Tolerances against the generator's truth (stated in docs/measurements.md)
HEIGHT_TOL_MM = 1.0  # middle disc / body heights: two 0.5 mm plane pixels
DEPTH_TOL_MM = 1.5  # body depth: the anterior wall is rounded
RESAMPLED_HEIGHT_TOL_MM = 1.0  # the same mask on an oblique 1 mm grid
RESAMPLED_VOLUME_TOL = 0.06
SLIP_TOL_MM = 1.5
MIN_LEVEL_ML = 5.0  # smaller truth pieces (a spinous process tip at the edge of view) are not levels  # relative volume change on an oblique 1 mm grid


def _semantic(case) -> sitk.Image:
    sem = sitk.GetImageFromArray(semantic_from_spider_values(sitk.GetArrayFromImage(case.mask)))
    sem.CopyInformation(case.mask)
    return sem


@pytest.fixture(scope="module")
def cases():
    return [generate_case(21, i, ("t2",)) for i in range(3)]


def test_levels_right_on_phantoms(cases):
    per_level: dict[int, list[bool]] = {}
    for case in cases:
        result = label_levels(_semantic(case))
        assert result.anchor == "sacrum"
        # a disc sliver at the edge of the view may be set aside (and counted); nothing else
        assert [w for w in result.warnings if "got no level" not in w] == []
        truth = sitk.GetArrayFromImage(case.mask)
        voxel_ml = float(np.prod(case.mask.GetSpacing())) / 1000
        accuracy = level_accuracy(result.instances, truth, voxel_ml, min_ml=MIN_LEVEL_ML)
        assert len(accuracy) >= 14  # at least T12..S1 and their discs
        for value, ok in accuracy.items():
            per_level.setdefault(value, []).append(ok)
        # a vertebra the field of view cuts is marked partial, as in the truth
        truth_partial = {int(v) for v in np.unique(truth)
                         if 101 <= v <= 125 and (truth == v).sum() * voxel_ml >= MIN_LEVEL_ML}
        got_partial = {lv.value for lv in result.levels if lv.partial}
        assert got_partial == truth_partial
    accuracy = np.mean([ok for oks in per_level.values() for ok in oks])
    assert accuracy == 1.0, {v: np.mean(o) for v, o in per_level.items()}


def test_measurements_within_tolerance_of_phantom_truth(cases):
    for case in cases:
        meta = case.metadata
        # the concave endplates make the disc taller at its centre than between the body boxes,
        # and the endplate layer facing a disc is labelled disc
        endplate = meta["endplate_concavity_mm"] + meta["endplate_label_inset_mm"]
        levels = label_levels(_semantic(case))
        values = [lv.value for lv in levels.levels]
        got = measure_levels(levels.instances, case.mask, values, case.images["t2"])
        truth = sitk.GetArrayFromImage(case.mask)
        voxel_ml = float(np.prod(case.mask.GetSpacing())) / 1000
        whole_discs = {v: h for v, h in meta["disc_height_mm"].items()
                       if (truth == v).sum() * voxel_ml >= MIN_LEVEL_ML}  # not a sliver at the edge
        assert len(whole_discs) >= 6
        for value, height in whole_discs.items():
            measured = got[(value, "disc_height_middle_mm")].value
            assert abs(measured - (height + 2 * endplate)) <= HEIGHT_TOL_MM, (value, measured, height)
            assert got[(value, "disc_volume_ml")].value > 0
            assert got[(value, "canal_area_mm2")].value > 0
            assert got[(value, "disc_csf_signal_ratio")].value > 0
        whole = [lv.value for lv in levels.levels if lv.kind == "vertebra" and not lv.partial and lv.value > 1]
        assert len(whole) >= 5
        for value in whole:
            height = meta["body_height_mm"][value]
            measured = got[(value, "body_height_middle_mm")].value
            assert abs(measured - (height - 2 * endplate)) <= HEIGHT_TOL_MM, (value, measured, height)
            depth = got[(value, "body_depth_mm")].value
            assert abs(depth - meta["body_depth_mm"][value]) <= DEPTH_TOL_MM
            # no spondylolisthesis: bodies are centred on their axis, so the posterior walls are
            # offset by half the difference of the depths only
            assert got[(value, "meyerding_grade")].value == 0
            offset = (meta["body_depth_mm"][value - 1] - meta["body_depth_mm"][value]) / 2
            assert abs(got[(value, "slip_mm")].value - offset) <= SLIP_TOL_MM


def _oblique_copy(image: sitk.Image, degrees: float, spacing: float, nearest: bool) -> sitk.Image:
    """``image`` resampled onto a grid rotated about the left-right axis, isotropic spacing."""
    a = math.radians(degrees)
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    direction = np.array(image.GetDirection()).reshape(3, 3) @ rot
    size = np.array(image.GetSize()) * np.array(image.GetSpacing())
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    n = [int(math.ceil(s / spacing)) + 20 for s in size]
    n[1] = n[2] = max(n[1], n[2])
    origin = np.array(centre) - direction @ (np.array(n) * spacing / 2)
    return sitk.Resample(image, n, sitk.Transform(), sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                         origin.tolist(), [spacing] * 3, direction.ravel().tolist(), 0, image.GetPixelID())


def test_oblique_anisotropic_input_gives_the_same_numbers_as_the_original(cases):
    case = cases[0]
    semantic = _semantic(case)
    moved = _oblique_copy(semantic, 15.0, 1.0, nearest=True)
    a, b = measure_case(semantic)[0], measure_case(moved)[0]
    assert [lv["value"] for lv in a["levels"]] == [lv["value"] for lv in b["levels"]]
    rows_b = {(r["value"], r["measure"]): r["fused"] for r in b["measurements"]}
    compared = 0
    for r in a["measurements"]:
        other = rows_b[(r["value"], r["measure"])]
        if r["fused"] is None or other is None:
            continue
        if r["measure"] in ("disc_height_middle_mm", "body_height_middle_mm"):
            assert abs(r["fused"] - other) <= RESAMPLED_HEIGHT_TOL_MM, (r, other)
            compared += 1
        if r["measure"] in ("disc_volume_ml", "body_volume_ml"):
            assert abs(r["fused"] - other) <= RESAMPLED_VOLUME_TOL * r["fused"], (r, other)
            compared += 1
    assert compared >= 20


def _labelmap(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(like)
    return out


def test_bad_inputs_give_a_clear_line_and_no_made_up_number(cases):
    case = cases[0]
    semantic = sitk.GetArrayFromImage(_semantic(case))
    truth = sitk.GetArrayFromImage(case.mask)

    empty, _ = measure_case(_labelmap(np.zeros_like(semantic), case.mask))
    assert empty["measurements"] == [] and any("no spine found" in w for w in empty["warnings"])

    one = np.where(truth == 4, 2, 0)  # L3 alone
    report, _ = measure_case(_labelmap(one, case.mask))
    assert any("one vertebra only" in w for w in report["warnings"])
    assert any("no discs in view" in w for w in report["warnings"])
    assert all(r["fused"] is None and r["note"] for r in report["measurements"])

    no_discs = np.where(semantic == 3, 0, semantic)
    report, _ = measure_case(_labelmap(no_discs, case.mask))
    assert any("no discs in view" in w for w in report["warnings"])
    assert not any(r["measure"].startswith("disc_") for r in report["measurements"])

    holes = semantic.copy()  # punch a hole into every disc's middle
    disc = truth == 203
    zz, yy, xx = np.nonzero(disc)
    centre = (int(np.median(zz)), int(np.median(yy)))
    holes[centre[0] - 2:centre[0] + 3, centre[1] - 3:centre[1] + 4, :][disc[centre[0] - 2:centre[0] + 3,
                                                                        centre[1] - 3:centre[1] + 4, :]] = 0
    report, _ = measure_case(_labelmap(holes, case.mask))
    row = next(r for r in report["measurements"] if r["value"] == 203 and r["measure"] == "disc_height_middle_mm")
    assert row["fused"] is not None and "holes" in row["note"]


def test_a_missing_disc_keeps_the_levels_and_names_those_in_doubt(cases):
    case = cases[1]
    truth = sitk.GetArrayFromImage(case.mask)
    semantic = semantic_from_spider_values(truth)
    semantic[truth == 203] = 0  # the model missed L3/L4: L3 and L4 touch
    semantic[(truth == 203) & (np.roll(truth, 1, axis=0) == 4)] = 2
    result = label_levels(_labelmap(semantic, case.mask))
    voxel_ml = float(np.prod(case.mask.GetSpacing())) / 1000
    accuracy = level_accuracy(result.instances, truth, voxel_ml, min_ml=MIN_LEVEL_ML)
    assert 203 not in [lv.value for lv in result.levels]
    assert all(ok for value, ok in accuracy.items() if value != 203), accuracy
    (warning,) = [w for w in result.warnings if "got no level" not in w]
    assert "L2/L3" in warning and "L4/L5" in warning and "levels in doubt" in warning
