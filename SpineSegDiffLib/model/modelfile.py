"""The model file: one `.zip` holding `model.json` (metadata) and `weights.safetensors`.

Loading never unpickles anything: weights are read with safetensors from bytes, so a
model file from an untrusted source cannot run code. The architecture and diffusion
settings are stored as plain dicts (``NetworkConfig.to_dict()``,
``DiffusionConfig.to_dict()``); this module stays generic and only checks their shape.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.model.metadata import (
    METADATA_NAME,
    MODEL_FORMAT_VERSION,
    WEIGHTS_NAME,
    _first_line,
    _plain_json,
    read_checked_weights,
    validate_metadata,
)
from SpineSegDiffLib.model.weights_check import CHECKSUM_KEY, check_weights, weights_sha256


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


def save_model(path: str | os.PathLike, state_dict: dict[str, torch.Tensor],
               metadata: dict[str, Any]) -> None:
    """Write a model file atomically. ``format_version`` and ``created`` are filled if absent."""
    path = Path(path)
    metadata = dict(metadata)
    metadata.setdefault("format_version", MODEL_FORMAT_VERSION)
    metadata.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    metadata.setdefault("training", {})
    metadata.setdefault("metrics", {})
    if not state_dict:
        raise ModelError(f"{path}: no weights to save")
    # Independent contiguous CPU copies: safetensors refuses shared or strided storage.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    weights = _safetensors_save(tensors)
    metadata[CHECKSUM_KEY] = weights_sha256(weights)  # loading verifies it
    validate_metadata(metadata, path)
    check_weights(weights, metadata, path)  # never save a model that would be refused on load
    try:
        meta_text = json.dumps(_plain_json(metadata), indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: metadata is not plain JSON ({exc})") from None
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(METADATA_NAME, meta_text, compress_type=zipfile.ZIP_DEFLATED)
            # float weights barely compress; storing them keeps loading fast
            zf.writestr(WEIGHTS_NAME, weights, compress_type=zipfile.ZIP_STORED)


def _safetensors_save(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file: checked metadata plus the weights as CPU tensors."""
    from safetensors.torch import load

    path = Path(path)
    metadata, data = read_checked_weights(path)
    try:
        state_dict = load(data)
    except Exception as exc:  # safetensors raises its own error types for any bad header
        raise ModelError(f"{path}: {WEIGHTS_NAME} is not a valid safetensors file "
                         f"({_first_line(exc)}); the model file is damaged or not a "
                         "SpineSegDiff model") from None
    return ModelFile(path=path, metadata=metadata, state_dict=state_dict)


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
    from SpineSegDiffLib.model import (
        network,  # lazy: heavy, and only needed for inference/training
    )

    try:
        # from_dict raises ModelError naming the file for unusable settings
        config = network.NetworkConfig.from_dict(model_file.metadata["architecture"],
                                                 source=str(model_file.path))
        model = network.DiffUNet(config)
        if model_file.metadata.get("presegmentation") is not None:
            from SpineSegDiffLib.model.presegmenter import PresegmentationConfig, attach_presegmenter

            PresegmentationConfig.from_dict(model_file.metadata["presegmentation"], source=str(model_file.path))
            attach_presegmenter(model)  # its weights: "presegmenter.*"
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{model_file.path}: model.json architecture is not usable "
                         f"({_first_line(exc)}); the model was made by another version") from None
    check_state_dict_fits(model.state_dict(), model_file.state_dict, model_file.path)
    model.load_state_dict(model_file.state_dict, strict=True)
    return model.to(device).eval()
