"""The review table: structures sorted most uncertain first, and jumping the views there."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import slicer

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY

from . import node_tags


@dataclass(frozen=True)
class ReviewRow:
    key: str  # structure key, also the segment ID
    name: str
    volume_ml: float
    mean_uncertainty: float
    peak_ras: tuple[float, float, float] | None  # None when the structure was not found


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"summary: {what} is {value!r}, not a number: re-run the segmentation")
    return float(value)


def _peak_ras(entry: dict, key: str) -> tuple[float, float, float] | None:
    lps = entry.get("peak_uncertainty_lps")
    if lps is None:
        return None
    if not isinstance(lps, (list, tuple)) or len(lps) != 3:
        raise InputError(f"summary: structures.{key}.peak_uncertainty_lps must be [x, y, z]: "
                         "re-run the segmentation")
    x, y, z = (_number(v, f"structures.{key}.peak_uncertainty_lps") for v in lps)
    return (-x, -y, z)  # LPS -> RAS


def review_rows(summary: dict) -> list[ReviewRow]:
    """One row per structure in the engine's summary, the most uncertain first."""
    structures = summary.get("structures") if isinstance(summary, dict) else None
    if not isinstance(structures, dict):
        raise InputError("summary has no 'structures' block: use the summary JSON written by "
                         "'spinesegdiff segment'")
    rows = []
    for key, entry in structures.items():
        if not isinstance(entry, dict):
            raise InputError(f"summary: structures.{key} is not an object: re-run the segmentation")
        known = BY_KEY.get(key)
        rows.append(ReviewRow(
            key=key,
            name=str(entry.get("name") or (known.name if known else key)),
            volume_ml=_number(entry.get("volume_ml", 0.0), f"structures.{key}.volume_ml"),
            mean_uncertainty=_number(entry.get("mean_uncertainty", 0.0), f"structures.{key}.mean_uncertainty"),
            peak_ras=_peak_ras(entry, key),
        ))
    rows.sort(key=lambda row: row.mean_uncertainty, reverse=True)
    return rows


def node_review_rows(segmentation_node) -> list[ReviewRow]:
    """Review rows of a result segmentation (its summary is kept on the node).

    An old or hand-edited scene shows no rows (with a log line saying why) rather than failing.
    """
    if segmentation_node is None:
        return []
    text = segmentation_node.GetAttribute(node_tags.SUMMARY_JSON)
    try:
        return review_rows(json.loads(text)) if text else []
    except (ValueError, InputError) as exc:  # JSONDecodeError is a ValueError
        logging.warning(f"SpineSegDiff: cannot show the review table of '{segmentation_node.GetName()}': {exc}")
        return []


def slice_nodes(scene: slicer.vtkMRMLScene) -> list:
    class_name = "vtkMRMLSliceNode"
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def jump_to(scene: slicer.vtkMRMLScene, ras: tuple[float, float, float]) -> None:
    """Centre every slice view on the RAS point (what Slicer's 'jump to' does)."""
    r, a, s = (float(v) for v in ras)
    for node in slice_nodes(scene):
        node.JumpSliceByCentering(r, a, s)
