"""SPIDER's conventions, in one place: mask values, vertebra and disc numbering, sequence names.

Mask values (van der Graaf et al., Sci Data 11, 264, 2024; docs/data.md): vertebrae are
numbered from the sacrum upwards (1 = S1, which carries the whole visible sacrum; 2 = L5,
..., 7 = T12), a vertebra cut by the field of view gets 100 + its number, discs are
200 + the number of the vertebra *below* them (201 = L5/S1), and 100 is the spinal canal.
The SPIDER reader and the phantoms (written in the same format) both use this module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from SpineSegDiffLib.core.errors import InputError

CANAL_VALUE = 100
PARTIAL_VERTEBRA_OFFSET = 100
DISC_OFFSET = 200
VERTEBRA_VALUES = range(1, 26)
PARTIAL_VERTEBRA_VALUES = range(PARTIAL_VERTEBRA_OFFSET + 1, PARTIAL_VERTEBRA_OFFSET + 26)
DISC_VALUES = range(DISC_OFFSET + 1, DISC_OFFSET + 26)
# The levels the phantoms draw, by name.
VERTEBRA_VALUE_BY_NAME: dict[str, int] = {"S1": 1, "L5": 2, "L4": 3, "L3": 4, "L2": 5, "L1": 6,
                                          "T12": 7, "T11": 8, "T10": 9, "T9": 10}
SACRUM_VALUE = VERTEBRA_VALUE_BY_NAME["S1"]

# The sequences of a SPIDER folder, as its file names spell them.
SEQUENCES: tuple[str, ...] = ("t1", "t2", "t2_SPACE")
_CANONICAL_SEQUENCE = {s.lower(): s for s in SEQUENCES}

# One lookup table for every known value -> semantic label (labels.STRUCTURES); anything else "unknown".
_LUT_SIZE = max(DISC_VALUES) + 1
_UNKNOWN = 255
_LUT = np.full(_LUT_SIZE, _UNKNOWN, dtype=np.uint8)
_LUT[0] = 0
_LUT[CANAL_VALUE] = 1
_LUT[list(VERTEBRA_VALUES)] = 2
_LUT[list(PARTIAL_VERTEBRA_VALUES)] = 2
_LUT[list(DISC_VALUES)] = 3


class SpiderWarning(UserWarning):
    """Something in a SPIDER folder was skipped or reinterpreted; the message names the file."""


def disc_value(lower_vertebra: str) -> int:
    """SPIDER value of the disc directly above ``lower_vertebra`` (``"S1"`` -> 201)."""
    return DISC_OFFSET + VERTEBRA_VALUE_BY_NAME[lower_vertebra]


def canonical_sequence(name: str) -> str | None:
    """The SPIDER spelling of a sequence name in any case ('T2_space' -> 't2_SPACE'); None if unknown."""
    return _CANONICAL_SEQUENCE.get(str(name).lower())


def canonical_sequences(sequences: Iterable[str] | None) -> set[str]:
    """The SPIDER spelling of each requested sequence (any case); all of them for None."""
    if sequences is None:
        return set(SEQUENCES)
    chosen = set()
    for s in sequences:
        canonical = canonical_sequence(s)
        if canonical is None:
            raise InputError(f"unknown SPIDER sequence {s!r}; choose from {', '.join(SEQUENCES)}")
        chosen.add(canonical)
    return chosen


def spider_to_semantic(mask: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """SPIDER instance values -> uint8 semantic labels (1 canal, 2 vertebrae, 3 discs, 0 else).

    Partially visible vertebrae (101-125) count as vertebrae. Values that SPIDER does not
    define are mapped to background with a :class:`SpiderWarning` naming ``source``
    and the values, so a wrongly converted mask is noticed rather than trained on.
    """
    values = np.asarray(mask)
    if values.dtype.kind == "f":
        integral = np.isfinite(values) & (values == np.round(values))
        index = np.where(integral, values, -1).astype(np.int64)
    else:
        index = values.astype(np.int64, copy=False)
    in_table = (index >= 0) & (index < _LUT_SIZE)
    semantic = _LUT[np.where(in_table, index, 0)]
    semantic[~in_table] = _UNKNOWN
    unknown = semantic == _UNKNOWN
    if unknown.any():
        bad = np.unique(values[unknown])
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        where = f"{source}: " if source else ""
        warnings.warn(f"{where}mask values {shown} are not SPIDER labels (1-25, 100, 101-125, "
                      f"201-225); {int(unknown.sum())} voxels were treated as background",
                      SpiderWarning, stacklevel=2)
        semantic[unknown] = 0
    return semantic
