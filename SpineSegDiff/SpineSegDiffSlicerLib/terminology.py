"""DICOM terminology strings for segments, in the format Slicer stores in a segment tag.

Slicer serialises a terminology entry as seven '~'-separated fields:
context ~ category ~ type ~ type modifier ~ region context ~ region ~ region modifier,
each coded field being 'scheme^value^meaning' ('^^' when empty).
"""

from __future__ import annotations

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
