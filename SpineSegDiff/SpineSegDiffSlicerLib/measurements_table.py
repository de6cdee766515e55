"""Per-level measurements as an MRML table (torch-free; runs in Slicer and with slicer-core).

One row per (level, measurement) from the measurements JSON (or the summary's
``levels_and_measurements``): fused value, mean, SD, 95 % interval, and the reason when
there is no value; the case's warnings come first. ``level_point_ras`` gives the RAS point
of a row's level, so a click can jump the slice views there (``review.jump_to``).
"""

from __future__ import annotations

import json
from pathlib import Path

import slicer

COLUMNS = ("level", "measure", "unit", "fused", "mean", "sd", "low95", "high95", "cal_low95", "cal_high95", "samples",
           "note")  # low95..high95: the samples' spread; cal_: the calibrated interval (docs/measurements.md)
_NUMERIC = {"fused", "mean", "sd", "low95", "high95", "cal_low95", "cal_high95"}


def read_measurements(source) -> dict:
    """The measurements report from a path (measurements JSON or summary JSON) or a dict."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text(encoding="utf-8"))
    data = data.get("levels_and_measurements", data)
    if "measurements" not in data or "levels" not in data:
        raise ValueError(f"{source if not isinstance(source, dict) else 'report'}: no levels/measurements "
                         f"in it; write it with spinesegdiff segment --output-measurements FILE.json")
    return data


def _text(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def measurements_table(scene: slicer.vtkMRMLScene, source, name: str = "SpineSegDiff measurements"):
    """Add a vtkMRMLTableNode with one row per measurement (warnings first) and return it."""
    report = read_measurements(source)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in COLUMNS:
        array = table.AddColumn()
        array.SetName(column)
    rows = [{"level": "case", "measure": "warning", "note": w} for w in report.get("warnings", [])]
    rows += [dict(r, samples=r.get("n_samples")) for r in report["measurements"]]
    for row in rows:
        index = table.AddEmptyRow()
        for c, column in enumerate(COLUMNS):
            table.SetCellText(index, c, _text(row.get(column)))
    table.SetAttribute("SpineSegDiff.levelAnchor", str(report.get("anchor", "")))
    table.SetAttribute("SpineSegDiff.levelPoints", json.dumps(
        {lv["name"]: lv["centroid_lps"] for lv in report["levels"]}))
    return table


def replace_measurements_table(scene: slicer.vtkMRMLScene, volume_node, source):
    """The volume's measurements table from ``source``, replacing its previous one (a re-run
    keeps one table per volume); tagged and placed like the other results."""
    from . import node_tags
    from .hierarchy import place_with_source

    report = read_measurements(source)  # before touching the scene: a bad file changes nothing
    old = node_tags.find_result_node(scene, "vtkMRMLTableNode", volume_node, node_tags.ROLE_MEASUREMENTS)
    if old is not None:
        scene.RemoveNode(old)
    table = measurements_table(scene, report, f"{volume_node.GetName()} measurements")
    table.SetAttribute(node_tags.INPUT_VOLUME_ID, volume_node.GetID())
    table.SetAttribute(node_tags.ROLE, node_tags.ROLE_MEASUREMENTS)
    place_with_source(scene, volume_node, (table,))
    return table


def level_point_ras(table, row: int) -> tuple[float, float, float] | None:
    """RAS point (mm) of the level named in ``row``, or None for a case-wide row."""
    points = json.loads(table.GetAttribute("SpineSegDiff.levelPoints") or "{}")
    lps = points.get(table.GetCellText(row, COLUMNS.index("level")))
    if lps is None:
        return None
    return (-float(lps[0]), -float(lps[1]), float(lps[2]))
