"""One Slicer segment per level: "L4", "L4/L5 disc", the spinal canal.

Each segment keeps the structure's type (Vertebra, Intervertebral disc) in the project's
terminology context and, where DICOM lists the level (CID 7603 vertebrae T12..S1, CID 7604
discs T12/L1..L5/S1: ``core/labels.py``), carries the level as the anatomic region, so
Slicer (and a DICOM SEG made from it) knows which vertebra a segment is without parsing
its name. Neighbouring levels get different shades of the structure's colour. Voxels of
a structure that got no level (a stray piece) stay in a "... (no level)" segment: the
segmentation never loses voxels because a level is unknown.
"""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.core.labels import (
    ANATOMICAL_STRUCTURE,
    BY_KEY,
    DISC_LEVELS,
    TERMINOLOGY_CONTEXT,
    VERTEBRA_LEVELS,
)
from SpineSegDiffLib.measure.levels import CANAL_VALUE, DISC_OFFSET, PARTIAL_OFFSET, level_name

ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_REGION = {level.spider_value: level.type for level in (*VERTEBRA_LEVELS, *DISC_LEVELS)}
_VERTEBRA_SHADES = ((0.95, 0.85, 0.55), (0.80, 0.62, 0.38), (0.98, 0.72, 0.58), (0.75, 0.75, 0.45))
_DISC_SHADES = ((0.55, 0.95, 0.45), (0.25, 0.72, 0.50), (0.75, 0.92, 0.25))

Segment = tuple[np.ndarray, dict]  # (boolean mask, z y x; slicerio segment properties)


def _terminology(structure_key: str, region_value: int | None) -> dict:
    structure = BY_KEY[structure_key]
    term = {"contextName": TERMINOLOGY_CONTEXT, "category": list(ANATOMICAL_STRUCTURE),
            "type": list(structure.type)}
    if region_value in _REGION:
        term.update({"anatomicContextName": ANATOMIC_CONTEXT, "anatomicRegion": list(_REGION[region_value])})
    return term


def _order(value: int) -> int:
    """Top of the spine first: vertebra n above disc 200 + n - 1 above vertebra n - 1."""
    if value > DISC_OFFSET:
        return -(2 * (value - DISC_OFFSET) + 1)
    base = value - PARTIAL_OFFSET if value > PARTIAL_OFFSET else value
    return -2 * base


def level_segments(instances: np.ndarray, semantic: np.ndarray | None = None) -> list[Segment]:
    """Segments of an instance labelmap (SPIDER values); ``semantic`` (1 canal, 2 vertebrae,
    3 discs) adds what got no level."""
    segments: list[Segment] = []
    canal = instances == CANAL_VALUE
    if canal.any():
        s = BY_KEY["spinal_canal"]
        segments.append((canal, {"id": s.key, "name": s.name, "color": list(s.color),
                                 "terminology": _terminology(s.key, None)}))
    values = [int(v) for v in np.unique(instances) if v and v != CANAL_VALUE]
    for value in sorted(values, key=_order):
        name = level_name(value)
        if value > DISC_OFFSET:
            n = value - DISC_OFFSET
            props = {"id": f"disc_{name.replace('/', '_')}", "name": f"{name} disc",
                     "color": list(_DISC_SHADES[n % len(_DISC_SHADES)]), "terminology": _terminology("discs", value)}
        else:
            n = value - PARTIAL_OFFSET if value > PARTIAL_OFFSET else value
            props = {"id": f"vertebra_{name}", "name": name + (" (partial)" if value > PARTIAL_OFFSET else ""),
                     "color": list(_VERTEBRA_SHADES[n % len(_VERTEBRA_SHADES)]),
                     "terminology": _terminology("vertebrae", n)}
        segments.append((instances == value, props))
    if semantic is not None:
        for structure_value, key in ((2, "vertebrae"), (3, "discs")):
            left = (semantic == structure_value) & (instances == 0)
            if left.any():
                s = BY_KEY[key]
                segments.append((left, {"id": f"{key}_no_level", "name": f"{s.name} (no level)",
                                        "color": list(s.color), "terminology": _terminology(key, None)}))
    return segments
