"""data.spider_labels: SPIDER's values, numbering and sequence names, owned by one module."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data import spider_labels as sl


def test_numbering_follows_spider():
    assert sl.disc_value("S1") == 201 and sl.disc_value("L1") == 206  # L5/S1, T12/L1
    assert sl.VERTEBRA_VALUE_BY_NAME["L5"] == 2 and sl.SACRUM_VALUE == 1
    assert set(sl.VERTEBRA_VALUE_BY_NAME.values()) <= set(sl.VERTEBRA_VALUES)
    assert 100 + sl.VERTEBRA_VALUE_BY_NAME["T12"] in sl.PARTIAL_VERTEBRA_VALUES


def test_semantic_mapping_and_unknown_values():
    mask = np.array([0, 1, 25, 100, 101, 125, 201, 225], np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sl.spider_to_semantic(mask).tolist() == [0, 2, 2, 1, 2, 2, 3, 3]
    with pytest.warns(sl.SpiderWarning, match="m.mha: mask values 26, 150 are not SPIDER labels"):
        assert sl.spider_to_semantic(np.array([26, 150, 100]), source="m.mha").tolist() == [0, 0, 1]
    with pytest.warns(sl.SpiderWarning, match="1.5"):
        sl.spider_to_semantic(np.array([1.5, 1.0]))


def test_sequence_names():
    assert sl.canonical_sequence("T2_space") == "t2_SPACE" and sl.canonical_sequence("flair") is None
    assert sl.canonical_sequences(None) == set(sl.SEQUENCES)
    assert sl.canonical_sequences(["T1", "t1"]) == {"t1"}
    with pytest.raises(InputError, match="unknown SPIDER sequence 'flair'"):
        sl.canonical_sequences(["flair"])


def test_the_phantom_writes_the_same_values():
    # the phantom still names its own copies (data/phantom.py is being turned into a package);
    # they must agree with the owner until it imports them from here
    from SpineSegDiffLib.data import phantom

    assert phantom.CANAL_VALUE == sl.CANAL_VALUE and phantom.VERTEBRA_VALUES == sl.VERTEBRA_VALUE_BY_NAME
    assert phantom.DISC_OFFSET == sl.DISC_OFFSET and phantom.PARTIAL_VERTEBRA_OFFSET == sl.PARTIAL_VERTEBRA_OFFSET
    assert set(phantom.SEQUENCES) <= {s.lower() for s in sl.SEQUENCES}
