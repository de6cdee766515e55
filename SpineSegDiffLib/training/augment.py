"""Batched data augmentation on tensors (runs on the training device).

Spatial: small rotations, scaling and shifts in the sagittal plane (no flips: the
anterior/posterior and superior/inferior directions carry anatomy). Intensity:
gamma, contrast/brightness, smooth bias field and noise, so the model does not
learn the phantoms' exact grey values.
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


def random_intensity(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma, contrast, brightness, a smooth multiplicative field and Gaussian noise."""
    b = images.shape[0]
    dev = images.device
    r = lambda *shape: torch.rand(*shape, generator=generator).to(dev)  # noqa: E731
    x = images.clamp(min=0)
    gamma = torch.exp((r(b, 1, 1, 1) * 2 - 1) * 0.35)
    x = x.pow(gamma)
    x = x * (0.8 + 0.4 * r(b, 1, 1, 1)) + (r(b, 1, 1, 1) * 2 - 1) * 0.08
    coarse = 1.0 + (r(b, 1, 4, 4) * 2 - 1) * 0.25
    field = F.interpolate(coarse, size=images.shape[-2:], mode="bicubic", align_corners=False)
    x = x * field
    noise_sd = r(b, 1, 1, 1) * 0.05
    noise = torch.randn(images.shape, generator=generator).to(dev)
    return x + noise * noise_sd
