"""The presegmentation on a model grid, and where sampling starts (noise or presegmentation).

The presegmentation is one image-encoder pass plus the presegmenter head per slice
(``model/presegmenter.py``): a deterministic result on its own, shown first, and the
start of the ensemble when ``start`` is "presegmentation" (noised to t_max with each
sample's own noise, so samples still differ and the uncertainty remains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.inference.settings import SegmentSettings

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.loading import LoadedModel


@dataclass(frozen=True)
class SamplingStart:
    kind: str  # "noise" or "presegmentation"
    t_max: int | None  # forward-process step the presegmentation is noised to; None for noise


def model_presegmentation(model: "LoadedModel") -> dict | None:
    """The model file's ``presegmentation`` record (None: the model has no presegmenter)."""
    return model.metadata.get("presegmentation")


def default_steps(model: "LoadedModel", start: str) -> int:
    """K for a start: the presegmentation start's recorded steps, else the model's default."""
    preseg = model_presegmentation(model)
    if start == "presegmentation" and preseg:
        return int(preseg["steps"])
    return model.default("steps", 10)


def default_start(model: "LoadedModel") -> str:
    preseg = model_presegmentation(model)
    return str(preseg.get("default_start", "presegmentation")) if preseg else "noise"


def resolve_start(model: "LoadedModel", settings: SegmentSettings) -> SamplingStart:
    """Where sampling starts for these settings, checked against the model."""
    preseg = model_presegmentation(model)
    kind = settings.start or default_start(model)
    if kind == "noise":
        if settings.t_max is not None:
            raise InputError("--t-max applies to --start presegmentation only")
        return SamplingStart("noise", None)
    if not preseg:
        raise InputError(f"--start presegmentation: the model {model.identity.get('id')} has no "
                         "presegmenter; use --start noise or a model with one "
                         "(spinesegdiff train --stage presegmenter --init MODEL)")
    t_max = settings.t_max if settings.t_max is not None else int(preseg["t_max"])
    train_steps = model.diffusion.train_steps
    if not 1 <= t_max < train_steps:
        raise InputError(f"--t-max must be between 1 and {train_steps - 1}, got {t_max}")
    if settings.steps > t_max + 1:
        raise InputError(f"--steps {settings.steps} is more than the {t_max + 1} steps from "
                         f"--t-max {t_max}; lower --steps or raise --t-max")
    return SamplingStart("presegmentation", t_max)


def presegment_grid(model: "LoadedModel", slices: np.ndarray, batch: int = 16) -> tuple[np.ndarray, float]:
    """Presegmentation probabilities (n, C, H, W) float32 of all slices (n, H, W), and the
    network seconds. Slices are independent (instance norm), so batching does not change them."""
    import torch

    from SpineSegDiffLib.grid.slices import context_stack
    from SpineSegDiffLib.model.devices import autocast_context
    from SpineSegDiffLib.model.presegmenter import presegment_logits

    inputs = torch.from_numpy(context_stack(slices.astype(np.float32), model.image_channels))
    out = np.zeros((slices.shape[0], model.network.config.num_classes, *slices.shape[1:]), np.float32)
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast_context(model.device):
        for start in range(0, len(inputs), batch):
            image = inputs[start:start + batch].to(model.device)
            logits = presegment_logits(model.network, model.network.encode(image))
            out[start:start + batch] = torch.sigmoid(logits.float()).cpu().numpy()
    return out, time.perf_counter() - t0
