"""Batched data augmentation on tensors (runs on the training device).

Spatial: small rotations, scaling and shifts in the sagittal plane (no flips: the
anterior/posterior and superior/inferior directions carry anatomy), batched with
``affine_grid`` so image, masks and weights move together on the device. Intensity:
MONAI's transforms (gamma, histogram shift, scaling, bias field, Gibbs ringing, Rician
noise), so the model does not learn the phantoms' exact grey values. Both are
deterministic given the ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(images: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None,
                  generator: torch.Generator, max_rotate_deg: float = 12.0,
                  scale_range: tuple[float, float] = (0.85, 1.15), max_shift: float = 0.08):
    """Same random affine for image (bilinear) and masks/weights (nearest), per batch item."""
    b = images.shape[0]
    dev = images.device
    r = lambda: torch.rand(b, generator=generator).to(dev)  # noqa: E731
    angle = (r() * 2 - 1) * math.radians(max_rotate_deg)
    scale = scale_range[0] + r() * (scale_range[1] - scale_range[0])
    shift = (torch.stack([r(), r()], 1) * 2 - 1) * max_shift * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if weights is not None and weights.dim() == 4:
        weights = F.grid_sample(weights, grid, mode="nearest", padding_mode="border", align_corners=False)
    return images, masks, weights


def intensity_pipeline():
    """MONAI intensity transforms (one random draw per call, the same for all channels, so
    the 2.5D neighbours stay consistent): contrast (gamma, histogram shift, scale, shift),
    bias field, Gibbs ringing and Rician noise."""
    from monai.transforms import (Compose, RandAdjustContrast, RandBiasField, RandGibbsNoise, RandHistogramShift,
                                  RandRicianNoise, RandScaleIntensity, RandShiftIntensity)

    return Compose([
        RandAdjustContrast(prob=0.6, gamma=(0.6, 1.6)),
        RandHistogramShift(num_control_points=(5, 10), prob=0.3),
        RandScaleIntensity(factors=0.2, prob=0.5),
        RandShiftIntensity(offsets=0.08, prob=0.5),
        RandBiasField(degree=3, coeff_range=(-0.25, 0.25), prob=0.5),
        RandGibbsNoise(prob=0.25, alpha=(0.0, 0.6)),
        RandRicianNoise(prob=0.5, std=0.04, sample_std=True),
    ])


_PIPELINE = None


def random_intensity(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MONAI's intensity augmentation per batch item, seeded from ``generator`` (deterministic)."""
    from monai.data import get_track_meta, set_track_meta

    global _PIPELINE
    if _PIPELINE is None:  # built once: Compose holds no per-call state besides its random state
        _PIPELINE = intensity_pipeline()
    seeds = torch.randint(0, 2**31 - 1, (images.shape[0],), generator=generator).tolist()
    # plain tensors (no MetaTensor bookkeeping) and one thread: these are many small ops, and
    # on a busy 2-core CPU two contending threads made them 10-25x slower (measured)
    track_meta, threads = get_track_meta(), torch.get_num_threads()
    set_track_meta(False)
    torch.set_num_threads(1)
    try:
        out = []
        for item, seed in zip(images.clamp(min=0), seeds):
            _PIPELINE.set_random_state(seed=seed)
            out.append(torch.as_tensor(_PIPELINE(item), dtype=images.dtype, device=images.device))
    finally:
        set_track_meta(track_meta)
        torch.set_num_threads(threads)
    return torch.stack(out)
