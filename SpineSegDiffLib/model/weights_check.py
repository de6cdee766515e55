"""Are a model file's weights the ones it was saved with, and all finite? Checked without torch.

``save_model`` records the SHA-256 of the weights bytes in ``model.json``
(``weights_sha256``); a zip's own CRC does not protect against a file that was
re-packed after its weights were altered. Non-finite weights (NaN, Inf) make the network
output NaN, which thresholds to "nothing here" with an uncertainty of 0: refused.
The Slicer process (``models add``) uses this, so it reads the safetensors layout with
numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from SpineSegDiffLib.core.errors import ModelError

CHECKSUM_KEY = "weights_sha256"

# safetensors dtype -> (unsigned view, exponent mask): a float is NaN/Inf iff its exponent is all ones
_FLOAT_EXPONENT = {
    "F64": (np.dtype("<u8"), 0x7FF0000000000000),
    "F32": (np.dtype("<u4"), 0x7F800000),
    "F16": (np.dtype("<u2"), 0x7C00),
    "BF16": (np.dtype("<u2"), 0x7F80),
}


def weights_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _non_finite_tensors(data: bytes, source: str | os.PathLike) -> list[tuple[str, int]]:
    """(name, count) of every tensor holding NaN or Inf."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8: 8 + length])
    except (struct.error, ValueError, UnicodeDecodeError):
        raise ModelError(f"{source}: weights.safetensors is not a valid safetensors file (bad header); "
                         "the model file is damaged or not a SpineSegDiff model") from None
    start = 8 + length
    bad = []
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        kind = _FLOAT_EXPONENT.get(info.get("dtype"))
        if kind is None:
            continue
        view, mask = kind
        try:
            begin, end = info["data_offsets"]
            raw = np.frombuffer(data, dtype=view, count=(end - begin) // view.itemsize,
                                offset=start + begin)
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{source}: weights.safetensors is not a valid safetensors file (tensor "
                             f"{name} lies outside the data); the model file is damaged") from None
        count = int(np.count_nonzero((raw & view.type(mask)) == view.type(mask)))
        if count:
            bad.append((name, count))
    return bad


def check_weights(data: bytes, metadata: dict, source: str | os.PathLike) -> None:
    """Raise ModelError if the weights differ from the recorded checksum or are not finite.

    Files saved before checksums were recorded (the bundled demo model) have none: for
    them only the finiteness check applies.
    """
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None:
        actual = weights_sha256(data)
        if actual != expected:
            raise ModelError(f"{source}: the weights do not match the checksum recorded in model.json "
                             f"(expected {expected[:12]}..., found {actual[:12]}...); the weights were "
                             "altered or damaged after the model was saved: download or export it again")
    bad = _non_finite_tensors(data, source)
    if bad:
        total = sum(count for _, count in bad)
        raise ModelError(f"{source}: {total:,} weights are NaN or infinite (in {len(bad)} tensors, e.g. "
                         f"{bad[0][0]}); the model would find nothing and report no uncertainty: "
                         "the model file is damaged or its training diverged, use another model")
