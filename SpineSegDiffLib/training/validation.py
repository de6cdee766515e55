"""Validation Dice of the ensemble on held-out slices (annotated structures only)."""

from __future__ import annotations

import numpy as np
import torch

from SpineSegDiffLib.core.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.model.devices import autocast_context
from SpineSegDiffLib.training.data import one_hot
from SpineSegDiffLib.training.targets import SliceSet


def validation_dice(network, slices: SliceSet, diffusion_cfg, samples: int, steps: int,
                    device: torch.device, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Dice per structure over all validation slices (pooled), annotated structures only."""
    from SpineSegDiffLib.model.diffusion import sample_ensemble

    inter = np.zeros(NUM_CLASSES)
    total = np.zeros(NUM_CLASSES)
    network.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = np.nonzero(slices.has_label)[0]
    with torch.inference_mode(), autocast_context(device):
        for start in range(0, len(idx), batch):
            sel = idx[start:start + batch]
            image = torch.from_numpy(slices.inputs[sel]).to(device)
            res = sample_ensemble(network, image, samples=samples, steps=steps,
                                  fused_steps=diffusion_cfg.fused_steps_for(steps), generator=gen,
                                  config=diffusion_cfg)
            pred = (res.probabilities.float() > 0.5).cpu().numpy()
            gt = one_hot(slices.labels[sel]) > 0.5
            ann = slices.annotated[sel][:, :, None, None]
            if slices.body_only[sel].any():  # body-only labels: score recall for vertebrae
                v = 1
                bo = slices.body_only[sel]
                pred[bo, v] &= gt[bo, v]
            inter += (pred & gt & ann).sum(axis=(0, 2, 3))
            total += ((pred & ann).sum(axis=(0, 2, 3)) + (gt & ann).sum(axis=(0, 2, 3)))
    network.train()
    return _dice_by_structure(inter, total)


def _dice_by_structure(inter: np.ndarray, total: np.ndarray) -> dict[str, float]:
    return {s.key: (float(2 * inter[i] / total[i]) if total[i] > 0 else float("nan"))
            for i, s in enumerate(STRUCTURES)}


def prediction_dice(network, slices: SliceSet, predict, device: torch.device, batch: int = 16) -> dict[str, float]:
    """Pooled Dice per structure of a deterministic ``predict(network, image) -> bool masks``
    (the presegmenter stages), scored like ``validation_dice``."""
    inter = np.zeros(NUM_CLASSES)
    total = np.zeros(NUM_CLASSES)
    network.eval()
    idx = np.nonzero(slices.has_label)[0]
    with torch.inference_mode(), autocast_context(device):
        for start in range(0, len(idx), batch):
            sel = idx[start:start + batch]
            pred = predict(network, torch.from_numpy(slices.inputs[sel]).to(device)).cpu().numpy()
            gt = one_hot(slices.labels[sel]) > 0.5
            ann = slices.annotated[sel][:, :, None, None]
            bo = slices.body_only[sel]
            pred[bo, 1] &= gt[bo, 1]  # body-only labels: vertebra recall
            inter += (pred & gt & ann).sum(axis=(0, 2, 3))
            total += (pred & ann).sum(axis=(0, 2, 3)) + (gt & ann).sum(axis=(0, 2, 3))
    network.train()
    return _dice_by_structure(inter, total)
