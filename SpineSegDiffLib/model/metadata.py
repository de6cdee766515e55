"""The model file's `model.json`: read and check it without torch (the Slicer GUI process uses this).

A model file is one `.zip` holding `model.json` (metadata) and `weights.safetensors`;
`modelfile.py` reads and writes the weights."""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.labels import STRUCTURES

MODEL_FORMAT_VERSION = 1
METADATA_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
# Size guard: a zip member may claim any uncompressed size (a "zip bomb"); refuse
# before reading rather than after filling memory.
MAX_METADATA_BYTES = 8 * 1024 * 1024
MAX_WEIGHTS_BYTES = 2 * 1024 * 1024 * 1024


REQUIRED_KEYS: dict[str, type] = {
    "format_version": int,
    "id": str,
    "version": str,
    "title": str,
    "created": str,
    "architecture": dict,
    "diffusion": dict,
    "labels": list,
    "preprocessing": dict,
    "inference_defaults": dict,
}


# "weights_sha256": absent in files saved before it existed; "presegmentation": the
# presegmenter head and its sampling start (model/presegmenter.py)
OPTIONAL_KEYS: dict[str, type] = {"training": dict, "metrics": dict, "weights_sha256": str,
                                   "presegmentation": dict}
GRID_KEYS = ("spacing_mm", "size", "min_slice_spacing_mm")
INFERENCE_KEYS = ("samples", "steps")


def labels_metadata() -> list[dict[str, Any]]:
    """The ``labels`` list for model.json, from the project's label table."""
    return [{"value": s.value, "key": s.key, "name": s.name, "color": list(s.color)}
            for s in STRUCTURES]


def validate_metadata(metadata: dict[str, Any], source: str | os.PathLike) -> None:
    """Raise ModelError (naming ``source``) unless ``metadata`` is a usable model.json."""
    if not isinstance(metadata, dict):
        raise ModelError(f"{source}: model.json is not a JSON object; the model file is damaged")
    version = metadata.get("format_version")
    if isinstance(version, int) and version > MODEL_FORMAT_VERSION:
        raise ModelError(f"{source}: model format {version} was made by a newer SpineSegDiff "
                         f"(this one reads up to {MODEL_FORMAT_VERSION}); update SpineSegDiff")
    for key, kind in REQUIRED_KEYS.items():
        if key not in metadata:
            raise ModelError(f"{source}: model.json lacks '{key}'; the model file is incomplete, "
                             "re-export it with the trainer")
        if not isinstance(metadata[key], kind) or (kind is int and isinstance(metadata[key], bool)):
            raise ModelError(f"{source}: model.json '{key}' should be a {kind.__name__}; "
                             "the model file is damaged")
    for key, kind in OPTIONAL_KEYS.items():
        if key in metadata and not isinstance(metadata[key], kind):
            raise ModelError(f"{source}: model.json '{key}' should be a {kind.__name__}")
    if metadata["format_version"] < 1:
        raise ModelError(f"{source}: model.json format_version {metadata['format_version']} "
                         "is not valid; the model file is damaged")
    _check_labels(metadata["labels"], source)
    grid = metadata["preprocessing"].get("grid")
    if not isinstance(grid, dict) or any(k not in grid for k in GRID_KEYS):
        raise ModelError(f"{source}: model.json preprocessing.grid needs {', '.join(GRID_KEYS)}; "
                         "re-export the model with the trainer")
    preseg = metadata.get("presegmentation")
    if preseg is not None:
        for key in ("t_max", "steps"):
            value = preseg.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelError(f"{source}: model.json presegmentation.{key} should be a positive "
                                 "integer; the model file is damaged")
    for key in INFERENCE_KEYS:
        value = metadata["inference_defaults"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"{source}: model.json inference_defaults.{key} should be a "
                             "positive integer")


def _check_labels(labels: list, source: str | os.PathLike) -> None:
    # Only values and keys matter for compatibility; names and colours are cosmetic.
    try:
        found = sorted((int(item["value"]), str(item["key"])) for item in labels)
    except (TypeError, KeyError, ValueError):
        raise ModelError(f"{source}: model.json labels should be a list of "
                         "{value, key, name, color}; the model file is damaged") from None
    expected = sorted((s.value, s.key) for s in STRUCTURES)
    if found != expected:
        raise ModelError(f"{source}: the model's labels {found} do not fit this SpineSegDiff's "
                         f"labels {expected}; use a model trained for these structures")


def _plain_json(value: Any) -> Any:
    """Metadata as strict JSON: NaN/inf (e.g. a Dice of an absent structure) become null,
    numpy scalars become Python numbers, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` only (no weights are read)."""
    path = Path(path)
    with _open_zip(path) as zf:
        return _read_metadata(zf, path)


def read_checked_weights(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """``model.json`` and the weights bytes, verified (checksum when recorded, all finite)."""
    from SpineSegDiffLib.model.weights_check import check_weights

    path = Path(path)
    with _open_zip(path) as zf:
        metadata = _read_metadata(zf, path)
        data = _read_member(zf, path, WEIGHTS_NAME, MAX_WEIGHTS_BYTES)
    check_weights(data, metadata, path)
    return metadata, data


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ModelError(f"model file {path} not found; check the path or download the model again")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable model file (.zip): {_first_line(exc)}; "
                         "the file may be truncated, download it again") from None


def _read_metadata(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    raw = _read_member(zf, path, METADATA_NAME, MAX_METADATA_BYTES)
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: {METADATA_NAME} is not valid JSON ({_first_line(exc)}); "
                         "the model file is damaged") from None
    validate_metadata(metadata, path)
    return metadata


def _read_member(zf: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelError(f"{path} has no {name}; it is not a complete SpineSegDiff model file") from None
    if info.file_size > limit:
        raise ModelError(f"{path}: {name} claims {info.file_size} bytes (limit {limit}); "
                         "refusing to unpack it, the file is damaged or not a model file")
    try:
        # ZipExtFile stops at the declared size and checks the CRC at the end
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError,
            NotImplementedError) as exc:
        raise ModelError(f"{path}: cannot read {name} ({_first_line(exc)}); the file is corrupt "
                         "or truncated, download it again") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
