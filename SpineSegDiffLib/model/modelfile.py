"""The model file: one `.zip` holding `model.json` (metadata) and `weights.safetensors`.

Loading never unpickles anything: weights are read with safetensors from bytes, so a
model file from an untrusted source cannot run code. The architecture and diffusion
settings are stored as plain dicts (``NetworkConfig.to_dict()``,
``DiffusionConfig.to_dict()``); this module stays generic and only checks their shape.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from SpineSegDiffLib.core.atomic import atomic_path
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
OPTIONAL_KEYS: dict[str, type] = {"training": dict, "metrics": dict}
GRID_KEYS = ("spacing_mm", "size", "min_slice_spacing_mm")
INFERENCE_KEYS = ("samples", "steps")


@dataclass
class ModelFile:
    """A loaded model file: its metadata and its weights (CPU tensors)."""

    path: Path
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    @property
    def id(self) -> str:
        return self.metadata["id"]

    @property
    def version(self) -> str:
        return self.metadata["version"]


def labels_metadata() -> list[dict[str, Any]]:
    """The ``labels`` list for model.json, from the project's label table."""
    return [{"value": s.value, "key": s.key, "name": s.name, "color": list(s.color)}
            for s in STRUCTURES]


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file as lowercase hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def save_model(path: str | os.PathLike, state_dict: dict[str, torch.Tensor],
               metadata: dict[str, Any]) -> None:
    """Write a model file atomically. ``format_version`` and ``created`` are filled if absent."""
    path = Path(path)
    metadata = dict(metadata)
    metadata.setdefault("format_version", MODEL_FORMAT_VERSION)
    metadata.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    metadata.setdefault("training", {})
    metadata.setdefault("metrics", {})
    validate_metadata(metadata, path)
    if not state_dict:
        raise ModelError(f"{path}: no weights to save")
    # Independent contiguous CPU copies: safetensors refuses shared or strided storage.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    try:
        meta_text = json.dumps(_plain_json(metadata), indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: metadata is not plain JSON ({exc})") from None
    weights = _safetensors_save(tensors)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(METADATA_NAME, meta_text, compress_type=zipfile.ZIP_DEFLATED)
            # float weights barely compress; storing them keeps loading fast
            zf.writestr(WEIGHTS_NAME, weights, compress_type=zipfile.ZIP_STORED)


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


def _safetensors_save(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` only (no weights are read)."""
    path = Path(path)
    with _open_zip(path) as zf:
        return _read_metadata(zf, path)


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file: checked metadata plus the weights as CPU tensors."""
    from safetensors.torch import load

    path = Path(path)
    with _open_zip(path) as zf:
        metadata = _read_metadata(zf, path)
        data = _read_member(zf, path, WEIGHTS_NAME, MAX_WEIGHTS_BYTES)
    try:
        state_dict = load(data)
    except Exception as exc:  # safetensors raises its own error types for any bad header
        raise ModelError(f"{path}: {WEIGHTS_NAME} is not a valid safetensors file "
                         f"({_first_line(exc)}); the model file is damaged or not a "
                         "SpineSegDiff model") from None
    return ModelFile(path=path, metadata=metadata, state_dict=state_dict)


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


def check_state_dict_fits(expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor],
                          source: str | os.PathLike) -> None:
    """Raise ModelError unless ``state_dict`` has exactly the names and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(name for name in set(expected) & set(state_dict)
                         if tuple(expected[name].shape) != tuple(state_dict[name].shape))
    if not (missing or unexpected or wrong_shape):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong_shape:
        name = wrong_shape[0]
        problems.append(f"{len(wrong_shape)} of another shape (e.g. {name}: file "
                        f"{tuple(state_dict[name].shape)}, network {tuple(expected[name].shape)})")
    raise ModelError(f"{source}: the weights do not fit the network described in model.json: "
                     f"{'; '.join(problems)}; the model file is damaged or made by another version")


def build_model(model_file: ModelFile, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the network from ``model.json`` and load the weights strictly (eval mode)."""
    from SpineSegDiffLib.model import network  # lazy: heavy, and only needed for inference/training

    try:
        # from_dict raises ModelError naming the file for unusable settings
        config = network.NetworkConfig.from_dict(model_file.metadata["architecture"],
                                                 source=str(model_file.path))
        model = network.DiffUNet(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{model_file.path}: model.json architecture is not usable "
                         f"({_first_line(exc)}); the model was made by another version") from None
    check_state_dict_fits(model.state_dict(), model_file.state_dict, model_file.path)
    model.load_state_dict(model_file.state_dict, strict=True)
    return model.to(device).eval()
