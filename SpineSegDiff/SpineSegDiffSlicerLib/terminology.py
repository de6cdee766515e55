"""DICOM terminology strings for segments, in the format Slicer stores in a segment tag.

Slicer serialises a terminology entry as seven '~'-separated fields:
context ~ category ~ type ~ type modifier ~ region context ~ region ~ region modifier,
each coded field being 'scheme^value^meaning' ('^^' when empty).
"""

from __future__ import annotations

import os
from pathlib import Path

from SpineSegDiffLib.core.labels import TERMINOLOGY_CONTEXT, Structure

CATEGORY_TYPE_CONTEXT = TERMINOLOGY_CONTEXT
REGION_CONTEXT = "Anatomic codes - DICOM master list"
_EMPTY_CODE = "^^"


def _code(triple: tuple[str, str, str]) -> str:
    return "^".join(triple)


def terminology_entry(structure: Structure) -> str:
    """The serialised terminology entry for one of the project's structures."""
    return "~".join([CATEGORY_TYPE_CONTEXT, _code(structure.category), _code(structure.type),
                     _EMPTY_CODE, REGION_CONTEXT, _EMPTY_CODE, _EMPTY_CODE])


def terminology_file(module_dir: str | os.PathLike) -> Path:
    """The shipped terminology (generated from the engine's label table), beside the module."""
    return Path(module_dir) / "Resources" / "Terminology" / "SpineSegDiff.term.json"


def load_terminology(terminologies_logic, module_dir: str | os.PathLike) -> str:
    """Load the project's terminology into Slicer's terminologies logic; returns its context name.

    Call at startup (as TotalSegmentator and MONAIAuto3DSeg do) so the Segment Editor shows
    the coded anatomy of the segments; ``terminologies_logic`` is
    ``slicer.modules.terminologies.logic()`` in the app, a vtkSlicerTerminologiesModuleLogic in tests.
    """
    path = terminology_file(module_dir)
    name = terminologies_logic.LoadTerminologyFromFile(str(path))
    if name != CATEGORY_TYPE_CONTEXT:
        raise RuntimeError(f"{path} did not load as '{CATEGORY_TYPE_CONTEXT}' (got '{name}')")
    return name
