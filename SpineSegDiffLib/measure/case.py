"""Levels and measurements of one segmented case: the fused result and every sample."""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.measure.calibration import load_calibration, voxel_edge
from SpineSegDiffLib.measure.intervals import INTERVAL_METHOD, measurement_rows
from SpineSegDiffLib.measure.frames import crop, nonzero_box
from SpineSegDiffLib.measure.levels import label_levels
from SpineSegDiffLib.measure.nearest import NearestLevel
from SpineSegDiffLib.measure.measurements import MEASURES, measure_levels

GEOMETRY_NOTE = ("measured on the input image's geometry (physical mm through its spacing and "
                 "direction), on planes fixed to each disc / body")
NEAREST_LEVEL_MM = 10.0  # a sample's voxel takes the level of the nearest fused instance this close


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
            and np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetDirection(), b.GetDirection()))


def _calibration_note(calibration: dict | None) -> dict:
    """Which calibration made cal_low95 .. cal_high95, and from what (the report says it)."""
    if calibration is None:
        return {"applied": False, "why": "no samples or no stored calibration: cal_low95 / cal_high95 are empty"}
    keys = ("method", "fitted_on", "phantom_seed", "model", "model_sha256", "model_id", "model_version", "samples",
            "steps", "date", "families", "not_calibrated")
    return {"applied": True, **{k: calibration.get(k) for k in keys}}


def measure_case(labelmap: sitk.Image, image: sitk.Image | None = None,
                 sample_labelmaps: list[sitk.Image] | None = None,
                 calibration: dict | str | None = "stored") -> tuple[dict, sitk.Image]:
    """(measurements report, instance labelmap with SPIDER values) for a semantic labelmap
    (1 canal, 2 vertebrae, 3 discs) and, for the spread, one labelmap per sample.
    ``calibration``: "stored" (the project's fitted one), a calibration dict, or None."""
    if calibration == "stored":
        calibration = load_calibration()
    t0 = time.perf_counter()
    levels = label_levels(labelmap)
    instances = sitk.GetImageFromArray(levels.instances)
    instances.CopyInformation(labelmap)
    t1 = time.perf_counter()
    values = [lv.value for lv in levels.levels]
    spacing_zyx = tuple(float(s) for s in labelmap.GetSpacing()[::-1])
    sample_arrays = [sitk.GetArrayViewFromImage(s) for s in sample_labelmaps or []]
    # measure in the box of every structure of the fused result and the samples (+ the
    # nearest-level reach): the same numbers as on the whole image, for the spine's cost
    margin = tuple(int(np.ceil(NEAREST_LEVEL_MM / s)) + 3 for s in spacing_zyx)
    box = nonzero_box([levels.instances, *sample_arrays], margin)
    box = box or tuple(slice(0, n) for n in levels.instances.shape)
    reference = crop(labelmap, box)
    if image is not None:
        image = sitk.Cast(crop(image, box) if _same_grid(image, labelmap) else image, sitk.sitkFloat32)
    fused_instances = levels.instances[box]
    fused = measure_levels(fused_instances, reference, values, image)
    samples = []
    nearest = NearestLevel(fused_instances, spacing_zyx, NEAREST_LEVEL_MM) if sample_arrays else None
    for sample in sample_arrays:
        samples.append(measure_levels(nearest(sample[box]), reference, values, image))
    if not samples:  # the calibration widens the samples' spread: without samples there is none
        calibration = None
    rows = measurement_rows(fused, samples, calibration, voxel_edge(labelmap.GetSpacing()))
    problems = list(levels.warnings)
    if not levels.levels:
        problems.append("nothing measured: no vertebra or disc found")
    elif not any(lv.kind == "disc" for lv in levels.levels):
        problems.append("no discs in view: disc heights, disc volumes, canal at disc level and slips "
                        "cannot be measured")
    report = {
        "version": 1,
        "geometry": GEOMETRY_NOTE,
        "anchor": levels.anchor,
        "warnings": problems,
        "levels": [lv.__dict__ for lv in levels.levels],
        "samples": len(samples),
        "interval": INTERVAL_METHOD,
        "calibration": _calibration_note(calibration),
        "units": {k: v[0] for k, v in MEASURES.items()},
        "measurements": rows,
        "not_measured": [{"level": r["level"], "measure": r["measure"], "why": r["note"]}
                         for r in rows if r["fused"] is None],
        "timings": {"levels_s": round(t1 - t0, 3), "measurements_s": round(time.perf_counter() - t1, 3)},
    }
    return report, instances


def level_accuracy(instances: np.ndarray, truth: np.ndarray, voxel_ml: float,
                   min_ml: float = 5.0) -> dict[int, bool]:
    """Per true level (SPIDER value, vertebrae and discs) of at least ``min_ml``: is the value
    most often given to its voxels the right one? Partial marks are ignored (103 counts as
    3); slivers at the edge of the field of view (a spinous process tip) are not levels a
    reader names, hence ``min_ml``."""
    def base(v):
        return np.where((v > 100) & (v < 200), v - 100, v)
    out = {}
    t, p = base(truth.astype(np.int32)), base(instances.astype(np.int32))
    for value in np.unique(t):
        if value == 0 or value == 100 or (t == value).sum() * voxel_ml < min_ml:
            continue
        got = p[(t == value) & (p > 0) & (p != 100)]
        out[int(value)] = bool(got.size) and int(np.bincount(got).argmax()) == int(value)
    return out


def calibration_mismatch(report: dict, model_id: str | None, model_version: str | None) -> str | None:
    """A warning when the calibrated intervals were fitted with another model than the run's."""
    cal = report.get("calibration", {})
    if not cal.get("applied") or cal.get("model_id") is None:
        return None
    if (cal["model_id"], cal.get("model_version")) == (model_id, model_version):
        return None
    return (f"the calibrated intervals were fitted with {cal['model_id']} {cal.get('model_version')}, not "
            f"{model_id} {model_version}: they may be too narrow or too wide (refit: "
            f"scripts/calibrate_measurement_intervals.py)")

