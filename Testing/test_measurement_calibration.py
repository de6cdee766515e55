"""Calibrated measurement intervals: the fit covers what it must with the narrowest width,
the stored calibration comes from phantoms the model never saw, and a case's report
carries both intervals and says which calibration made the calibrated one."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values
from SpineSegDiffLib.measure.calibration import (
    FAMILIES,
    calibrated_interval,
    fit_family,
    load_calibration,
    unit_floor,
)
from SpineSegDiffLib.measure.case import calibration_mismatch, measure_case

DEMO_MODEL = REPO / "SpineSegDiffLib" / "resources" / "models" / "spinesegdiff-demo.zip"


def _pairs(errors, sds, edge=1.0, value=10.0):
    return [{"fused": value + e, "truth": value, "sd": s, "voxel_edge_mm": edge} for e, s in zip(errors, sds)]


def test_fit_covers_95_percent_and_prefers_the_narrower_of_spread_and_floor():
    rng = np.random.default_rng(0)
    # errors three times the samples' spread: k near 3 covers, no floor needed
    sds = rng.uniform(0.5, 2.0, 400)
    errors = 3.0 * sds * rng.uniform(-1, 1, 400)
    fit = fit_family(_pairs(errors, sds), "length_mm")
    assert fit["coverage"] >= 0.95 and 2.0 <= fit["k"] <= 3.0 and fit["f"] == 0.0
    # the samples agree (tiny SD) but the boundary is a voxel off: the floor carries it
    errors = rng.choice([-1.0, 1.0], 400) * rng.uniform(0.0, 1.2, 400)
    fit = fit_family(_pairs(errors, np.full(400, 0.01), edge=1.0), "length_mm")
    assert fit["coverage"] >= 0.95 and 1.0 <= fit["f"] <= 1.21
    half = [calibrated_interval("disc_height_middle_mm", p["fused"], p["sd"], 1.0,
                                {"families": {"length_mm": fit}}) for p in _pairs(errors, np.full(400, 0.01))]
    inside = [lo <= 10.0 <= hi for lo, hi in half]
    assert np.mean(inside) >= 0.95


def test_floors_grow_with_the_voxel_and_the_structure():
    assert unit_floor("length_mm", 8.0, 2.0) == 2 * unit_floor("length_mm", 8.0, 1.0)
    assert unit_floor("volume_ml", 8.0, 1.0) == pytest.approx(4 * unit_floor("volume_ml", 1.0, 1.0))
    assert unit_floor("area_mm2", 400.0, 1.0) == 20.0
    assert calibrated_interval("body_wedge_ratio", 0.9, 0.1, 1.0, {"families": {}}) is None  # not calibrated


def test_stored_calibration_comes_from_phantoms_the_demo_model_never_saw():
    calibration = load_calibration()
    assert calibration is not None, "resources/measurement_calibration.json missing"
    assert set(calibration["families"]) == set(FAMILIES)
    for fit in calibration["families"].values():
        assert fit["n"] >= 20 and fit["coverage"] >= 0.95 and fit["k"] >= 0 and fit["f"] >= 0
    with zipfile.ZipFile(DEMO_MODEL) as z:
        meta = json.loads(z.read("model.json"))
    training = meta["training"]
    seed = training["config"]["seed"]
    used = {seed, seed + 1000, seed + 2000, training["data"]["phantom_seed"]}  # train, test, logit calibration
    assert calibration["phantom_seed"] not in used
    assert calibration["model"] == DEMO_MODEL.name


def test_a_report_gives_raw_and_calibrated_intervals_and_names_the_calibration():
    case = generate_case(21, 1, ("t2",))
    truth = sitk.GetArrayFromImage(case.mask)
    semantic = semantic_from_spider_values(truth)

    def image(array):
        out = sitk.GetImageFromArray(array.astype(np.uint8))
        out.CopyInformation(case.mask)
        return out

    # two "samples": the truth, and the truth without a slice of disc L3/L4 (a spread there)
    thinner = semantic.copy()
    thinner[(truth == 203) & (np.roll(truth, 1, axis=1) != 203)] = 0
    report, _ = measure_case(image(semantic), case.images["t2"], [image(semantic), image(thinner)])
    assert report["calibration"]["applied"] and "phantom" in report["calibration"]["fitted_on"]
    fitted = report["calibration"]
    assert fitted["model_id"] == "spinesegdiff-demo"
    assert calibration_mismatch(report, fitted["model_id"], fitted["model_version"]) is None
    assert "refit" in calibration_mismatch(report, "my-model", "2.0")
    rows = [r for r in report["measurements"] if r["measure"] in ("disc_height_middle_mm", "disc_volume_ml")
            and r["fused"] is not None]
    assert rows
    for r in rows:
        assert r["cal_low95"] < r["fused"] < r["cal_high95"]  # the floor: never a zero-width interval
        assert r["low95"] is not None  # the raw sample interval is kept
    # without samples there is no spread to calibrate: no interval at all
    alone, _ = measure_case(image(semantic), case.images["t2"])
    assert all(r["cal_low95"] is None and r["low95"] is None for r in alone["measurements"])
    assert not alone["calibration"]["applied"]
