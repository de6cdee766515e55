"""Calibrated 95 % intervals: fused value +- max(k * SD over the samples, a resolution floor).

The ensemble's samples agree with each other more than with a reference: a bias they all
share (a boundary drawn one voxel too far out) is invisible in their spread. So the
calibrated interval is centred on the fused value, widened by a factor ``k`` and never
narrower than a floor the grid sets (partial volume):

* lengths (mm): ``f * e``; areas (mm²): ``f * e * sqrt(area)``; volumes (ml):
  ``f * e * (volume in mm³)^(2/3) / 1000`` (a one-voxel shell), with ``e`` the voxel edge
  (cube root of the voxel volume, mm).

``k`` and ``f`` are fitted per family on phantoms of a seed used neither for training nor
for testing, against the same measurement on the generator's truth mask
(``scripts/calibrate_measurement_intervals.py``), and stored with where they come from in
``resources/measurement_calibration.json``. Ratios, percentages and grades are not
calibrated (no row gets a made-up interval). Real cases are then an independent check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "resources" / "measurement_calibration.json"
FAMILIES: dict[str, tuple[str, ...]] = {
    "length_mm": ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm",
                  "canal_ap_diameter_mm", "body_height_anterior_mm", "body_height_middle_mm",
                  "body_height_posterior_mm", "body_depth_mm", "slip_mm"),
    "area_mm2": ("canal_area_mm2",),
    "volume_ml": ("disc_volume_ml", "body_volume_ml"),
}
FAMILY_OF = {m: fam for fam, measures in FAMILIES.items() for m in measures}
TARGET = 0.95


def unit_floor(family: str, value: float, voxel_edge_mm: float) -> float:
    """The floor for ``f`` = 1 (see the module text)."""
    if family == "length_mm":
        return voxel_edge_mm
    if family == "area_mm2":
        return voxel_edge_mm * math.sqrt(max(value, 0.0))
    return voxel_edge_mm * (max(value, 0.0) * 1000.0) ** (2 / 3) / 1000.0


def voxel_edge(spacing: tuple[float, ...]) -> float:
    return float(np.prod(spacing)) ** (1 / 3)


def load_calibration(path: str | Path | None = None) -> dict | None:
    """The stored calibration, or None when there is none (rows then have no calibrated interval)."""
    path = Path(path) if path is not None else CALIBRATION_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def calibrated_interval(measure: str, fused: float | None, sd: float | None, voxel_edge_mm: float,
                        calibration: dict | None) -> tuple[float, float] | None:
    """(low, high) of the calibrated 95 % interval, or None (no value, no calibration for it)."""
    family = FAMILY_OF.get(measure)
    if fused is None or calibration is None or family not in calibration.get("families", {}):
        return None
    fit = calibration["families"][family]
    half = max(fit["k"] * (sd or 0.0), fit["f"] * unit_floor(family, fused, voxel_edge_mm))
    return round(fused - half, 4), round(fused + half, 4)


def fit_family(pairs: list[dict], family: str, target: float = TARGET) -> dict:
    """The (k, f) with at least ``target`` coverage and the smallest mean half-width.

    ``pairs``: {"fused", "sd" (or None), "truth", "voxel_edge_mm"}. For a given k a pair
    is covered by k * SD or needs f >= |error| / unit floor; so for each k on a grid the
    smallest f follows exactly, and the k with the narrowest intervals wins.
    """
    err = np.array([abs(p["fused"] - p["truth"]) for p in pairs], float)
    sd = np.array([p["sd"] or 0.0 for p in pairs], float)
    unit = np.array([max(unit_floor(family, p["fused"], p["voxel_edge_mm"]), 1e-9) for p in pairs])
    need = int(math.ceil(target * len(pairs)))
    best = None
    for k in np.arange(0.0, 10.01, 0.25):
        by_sd = err <= k * sd
        missing = need - int(by_sd.sum())
        f = 0.0 if missing <= 0 else float(np.sort(err[~by_sd] / unit[~by_sd])[missing - 1])
        f = math.ceil(f * 100) / 100  # rounded up: the stored value still covers
        half = np.maximum(k * sd, f * unit)
        if best is None or half.mean() < best["mean_half_width"] - 1e-12:
            best = {"k": float(k), "f": f, "mean_half_width": round(float(half.mean()), 4),
                    "coverage": round(float(np.mean(err <= half + 1e-12)), 3), "n": len(pairs)}
    return best
