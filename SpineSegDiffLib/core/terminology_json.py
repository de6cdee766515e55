"""Slicer's terminology JSON (``.term.json``) built from the engine's label table.

The format is Slicer's "segmentation category and type" context (the dcmqi
segment-context schema), as Slicer's bundled lists and SlicerTotalSegmentator use it.
scripts/make_terminology.py writes SpineSegDiff/Resources/Terminology/SpineSegDiff.term.json
from here, and a test checks that the shipped file equals ``build_terminology()``.
"""

from __future__ import annotations

import json

from SpineSegDiffLib.core.labels import (
    ANATOMICAL_STRUCTURE,
    DISC_LEVELS,
    STRUCTURES,
    TERMINOLOGY_CONTEXT,
    VERTEBRA_LEVELS,
    Code,
)

SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"


def _coded(code: Code) -> dict:
    scheme, value, meaning = code
    return {"CodingSchemeDesignator": scheme, "CodeValue": value, "CodeMeaning": meaning}


def _type_entry(code: Code, label: str, rgb: tuple[float, float, float]) -> dict:
    entry = _coded(code)
    entry["3dSlicerLabel"] = label
    entry["recommendedDisplayRGBValue"] = [int(round(255 * c)) for c in rgb]
    if code[0] == "SCT":
        entry["SNOMEDCTConceptID"] = code[1]
    return entry


def build_terminology() -> dict:
    """The terminology context: the three structures, then per-level vertebrae and discs."""
    by_key = {s.key: s for s in STRUCTURES}
    types = [_type_entry(s.type, s.name.lower(), s.color) for s in STRUCTURES]
    types += [_type_entry(level.type, f"{level.name} vertebra", by_key["vertebrae"].color)
              for level in VERTEBRA_LEVELS]
    types += [_type_entry(level.type, f"{level.name} disc", by_key["discs"].color) for level in DISC_LEVELS]
    category = _coded(ANATOMICAL_STRUCTURE)
    category.update({"cid": "7150", "contextGroupName": "SegmentationPropertyCategories",
                     "showAnatomy": False, "Type": types})
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT, "@schema": SCHEMA,
            "SegmentationCodes": {"Category": [category]}}


def terminology_text() -> str:
    return json.dumps(build_terminology(), indent=2) + "\n"
