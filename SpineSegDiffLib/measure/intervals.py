"""Per-measurement spread over the ensemble: the fused value, mean, SD and a 95 % interval.

The interval is a 95 % prediction interval for one more ensemble sample:
mean +- t(0.975, S - 1) * SD * sqrt(1 + 1 / S) (Student t: with S = 5 samples, a plain
2.5-97.5 percentile range would be the min..max and cover far less than 95 %).
It shows how much the samples disagree, not how far the truth may be: the calibrated
interval (``measure/calibration.py``) is given next to it as ``cal_low95`` .. ``cal_high95``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import stdtrit  # scipy.stats alone takes seconds to import

from SpineSegDiffLib.measure.calibration import calibrated_interval
from SpineSegDiffLib.measure.levels import level_name
from SpineSegDiffLib.measure.measurements import MEASURES, Measured

INTERVAL_METHOD = "95 % prediction interval for one more sample: mean +- t(0.975, S-1) * SD * sqrt(1 + 1/S)"


def prediction_half_width_factor(n: int) -> float:
    """t(0.975, n - 1) * sqrt(1 + 1 / n): the raw interval's half-width in SDs for n samples (n >= 2)."""
    return float(stdtrit(n - 1, 0.975)) * math.sqrt(1 + 1 / n)


def spread(values: list[float]) -> dict:
    """mean, sd, low95, high95 of per-sample values (None where there are too few)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "low95": None, "high95": None, "n_samples": 0}
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": round(mean, 4), "sd": None, "low95": None, "high95": None, "n_samples": 1}
    sd = float(np.std(values, ddof=1))
    half = prediction_half_width_factor(n) * sd
    return {"mean": round(mean, 4), "sd": round(sd, 4), "low95": round(mean - half, 4),
            "high95": round(mean + half, 4), "n_samples": n}


def measurement_rows(fused: Measured, samples: list[Measured], calibration: dict | None = None,
                     voxel_edge_mm: float = 1.0) -> list[dict]:
    """One row per (level, measurement): fused value, its spread over the samples (raw
    interval), the calibrated interval, and why a value is missing if it is."""
    rows = []
    for (value, key), result in sorted(fused.items()):
        per_sample = [s[(value, key)].value for s in samples
                      if (value, key) in s and s[(value, key)].value is not None]
        row = {"level": level_name(value), "value": value, "measure": key, "unit": MEASURES[key][0],
               "fused": result.value}
        row.update(spread(per_sample))
        calibrated = calibrated_interval(key, result.value, row["sd"], voxel_edge_mm, calibration)
        row["cal_low95"], row["cal_high95"] = calibrated if calibrated else (None, None)
        missing = len(samples) - len(per_sample)
        notes = [result.why] if result.why else []
        if samples and missing:
            notes.append(f"not measurable on {missing} of {len(samples)} samples")
        row["note"] = "; ".join(notes) or None
        rows.append(row)
    return rows
