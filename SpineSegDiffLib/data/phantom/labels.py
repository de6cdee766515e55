"""SPIDER label values of the phantom (the one place they are defined) and their semantic mapping."""

from __future__ import annotations

import numpy as np

# --- SPIDER label values: the ONE place the phantom defines them --------------------
# Vertebrae are numbered from the sacrum upwards (1 = S1, the top of the sacrum, which
# carries the whole visible sacrum; 2 = L5, ..., 7 = T12, 8 = T11 ...). A vertebra cut by
# the field of view gets 100 + its number. Discs are 200 + the number of the vertebra
# *below* them (201 = L5/S1, 206 = T12/L1). 100 is the spinal canal (thecal sac).
VERTEBRA_VALUES: dict[str, int] = {"S1": 1, "L5": 2, "L4": 3, "L3": 4, "L2": 5, "L1": 6,
                                   "T12": 7, "T11": 8, "T10": 9, "T9": 10}
CANAL_VALUE = 100
PARTIAL_VERTEBRA_OFFSET = 100
DISC_OFFSET = 200
SACRUM_VALUE = VERTEBRA_VALUES["S1"]
REQUIRED_VERTEBRAE = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")

def disc_value(lower_vertebra: str) -> int:
    """SPIDER value of the disc directly above ``lower_vertebra`` (``"S1"`` -> 201)."""
    return DISC_OFFSET + VERTEBRA_VALUES[lower_vertebra]


def semantic_from_spider_values(mask: np.ndarray) -> np.ndarray:
    """SPIDER values -> semantic labels (1 canal, 2 vertebrae, 3 discs) for previews."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, np.uint8)
    out[mask == CANAL_VALUE] = 1
    out[((mask >= 1) & (mask <= 25)) | ((mask >= 101) & (mask <= 125))] = 2
    out[(mask >= 201) & (mask <= 225)] = 3
    return out
