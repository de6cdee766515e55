"""Writing levels and measurements: instance labelmap, measurements CSV / JSON, a PNG per case."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_path, write_text
from SpineSegDiffLib.core.errors import InputError

CSV_COLUMNS = ("level", "value", "measure", "unit", "fused", "mean", "sd", "low95", "high95",
               "cal_low95", "cal_high95", "n_samples", "note")
INSTANCE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")  # and .seg.nrrd (ends with .nrrd)


def measurements_format(path: str | Path) -> str:
    """"csv" or "json" from the file name; anything else is a clear error before any work."""
    name = str(path).lower()
    for ext in ("csv", "json"):
        if name.endswith("." + ext):
            return ext
    raise InputError(f"--output-measurements {path}: give a .csv or .json file name")


def check_instances_path(path: str | Path) -> None:
    if not str(path).lower().endswith(INSTANCE_EXTENSIONS):
        raise InputError(f"--output-instances {path}: give a labelmap file ({', '.join(INSTANCE_EXTENSIONS)}) "
                         "or a Slicer segmentation (.seg.nrrd, one segment per level)")


def check_outputs(instances: str | Path | None, measurements: str | Path | None) -> None:
    """The file names of --output-instances / --output-measurements, checked before any work."""
    if measurements is not None:
        measurements_format(measurements)
    if instances is not None:
        check_instances_path(instances)


def write_outputs(report: dict, instances: sitk.Image, semantic: sitk.Image, *, instances_path: str | Path | None,
                  measurements_path: str | Path | None, plot_path: str | Path | None) -> None:
    """The level labels, the measurements table and their plot, each where a path is given."""
    if instances_path is not None:
        write_instances(instances, instances_path, semantic)
    if measurements_path is not None:
        write_measurements(report, measurements_path)
    if plot_path is not None:
        plot_measurements(report, plot_path)


def write_measurements(report: dict, path: str | Path) -> None:
    if measurements_format(path) == "json":
        write_text(path, json.dumps(report, indent=2) + "\n")
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report["measurements"]:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    for warning in report["warnings"]:  # the table says what could not be done, and why
        writer.writerow(["case", "", "warning"] + [""] * (len(CSV_COLUMNS) - 4) + [warning])
    write_text(path, buf.getvalue())


def write_instances(instances: sitk.Image, path: str | Path, semantic: sitk.Image | None = None) -> None:
    """The level labels: a labelmap of SPIDER values, or for a .seg.nrrd name a Slicer
    segmentation with one segment per level (``semantic`` adds what got no level)."""
    from SpineSegDiffLib.data.imageio import write_image

    check_instances_path(path)
    if str(path).lower().endswith(".seg.nrrd"):
        write_level_segmentation(instances, path, semantic)
        return
    write_image(sitk.Cast(instances, sitk.sitkUInt16), path)


def write_level_segmentation(instances: sitk.Image, path: str | Path, semantic: sitk.Image | None = None) -> None:
    """A .seg.nrrd with one segment per level ("L4", "L4/L5 disc", canal)."""
    from SpineSegDiffLib.data.outputs import write_segments
    from SpineSegDiffLib.measure.level_segments import level_segments

    semantic_array = None if semantic is None else sitk.GetArrayViewFromImage(semantic)
    write_segments(instances, level_segments(sitk.GetArrayViewFromImage(instances), semantic_array), path)


def plot_measurements(report: dict, path: str | Path) -> None:
    """Disc heights (middle) and canal area per level, fused value and 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "disc_height_middle_mm", "disc height, middle (mm)"),
                           (axes[1], "canal_area_mm2", "canal area at the disc (mm²)")):
        rows = [r for r in report["measurements"] if r["measure"] == key]
        rows.sort(key=lambda r: -r["value"])  # top of the spine first
        x = np.arange(len(rows))
        fused = [np.nan if r["fused"] is None else r["fused"] for r in rows]
        ax.plot(x, fused, "o", color="k", label="fused")
        for i, r in enumerate(rows):
            if r.get("cal_low95") is not None:  # calibrated: what the truth may be
                ax.plot([i + 0.15, i + 0.15], [r["cal_low95"], r["cal_high95"]], "-", color="tab:orange", lw=2)
            if r["low95"] is not None:  # raw: how much the samples disagree
                ax.plot([i, i], [r["low95"], r["high95"]], "-", color="tab:blue", lw=3, alpha=0.6)
                ax.plot(i, r["mean"], "_", color="tab:blue", ms=12)
            if r["fused"] is None:
                ax.annotate("n/a", (i, 0), ha="center")
        ax.set_xticks(x, [r["level"] for r in rows], rotation=45)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    axes[0].legend([Line2D([], [], ls="", marker="o", color="k"), Line2D([], [], color="tab:blue", lw=3),
                    Line2D([], [], color="tab:orange", lw=2)],
                   ["fused", "samples: mean, 95 % interval", "calibrated 95 % interval"], loc="best", fontsize=8)
    fig.suptitle(f"levels anchored at: {report['anchor']}" +
                 (f" — {len(report['warnings'])} warning(s)" if report["warnings"] else ""), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
