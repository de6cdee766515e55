"""The phantom's SPIDER label values: those of ``data/spider_labels.py`` (their one owner),
under the names the phantom modules use, and the semantic mapping for previews."""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.data.spider_labels import (  # noqa: F401  (re-exported for the phantom modules)
    CANAL_VALUE,
    DISC_OFFSET,
    PARTIAL_VERTEBRA_OFFSET,
    SACRUM_VALUE,
    disc_value,
    spider_to_semantic,
)
from SpineSegDiffLib.data.spider_labels import VERTEBRA_VALUE_BY_NAME as VERTEBRA_VALUES  # noqa: F401

REQUIRED_VERTEBRAE = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")


def semantic_from_spider_values(mask: np.ndarray) -> np.ndarray:
    """SPIDER values -> semantic labels (1 canal, 2 vertebrae, 3 discs) for previews."""
    return spider_to_semantic(np.asarray(mask))
