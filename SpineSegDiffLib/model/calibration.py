"""Post-hoc calibration of the network's x0 logits (Platt scaling per structure).

A diffusion segmenter trained for a short time is often under-confident: background
probabilities stay around 0.1, and the entropy-based uncertainty then lights up the
whole image. Fitting one scale and one bias per structure on held-out labelled slices
(by binary cross-entropy) fixes the confidence without touching what the network
ranks as more or less likely: Dice at 0.5 can move slightly, the ordering of voxels
by uncertainty hardly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from SpineSegDiffLib.model.diffusion import (
    DiffusionConfig,
    make_scheduler,
    set_sampling_timesteps,
)


@torch.no_grad()
def collect_logits(network, inputs: np.ndarray, masks: np.ndarray, weights: np.ndarray,
                   diffusion: DiffusionConfig, device: torch.device, steps: int = 10, fused_steps: int = 5,
                   max_pixels: int = 400_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw logits at the fused timesteps, with targets and weights, subsampled.

    Returns (logits, targets, weights), each (C, P) on the CPU.
    """
    scale, bias = network.logit_scale.clone(), network.logit_bias.clone()
    network.logit_scale.fill_(1.0)
    network.logit_bias.zero_()
    network.eval()
    gen = torch.Generator().manual_seed(seed)
    sched = make_scheduler(diffusion)
    fused_ts = set_sampling_timesteps(sched, steps)[-fused_steps:]
    out_l, out_y, out_w = [], [], []
    try:
        for start in range(0, len(inputs), 16):
            x = torch.from_numpy(inputs[start:start + 16]).to(device)
            y = torch.from_numpy(masks[start:start + 16]).float()
            w = torch.from_numpy(weights[start:start + 16]).float()
            t = fused_ts[torch.randint(len(fused_ts), (x.shape[0],), generator=gen)].to(device)
            noise = torch.randn(y.shape, generator=gen)
            x_t = sched.add_noise(2 * y - 1, noise, t.cpu()).to(device)
            out_l.append(network(x, x_t, t).float().cpu())
            out_y.append(y)
            out_w.append(w)
    finally:
        network.logit_scale.copy_(scale)
        network.logit_bias.copy_(bias)
    logits = torch.cat(out_l).transpose(0, 1).reshape(len(scale), -1)
    targets = torch.cat(out_y).transpose(0, 1).reshape(len(scale), -1)
    wts = torch.cat(out_w).transpose(0, 1).reshape(len(scale), -1)
    if logits.shape[1] > max_pixels:
        keep = torch.randperm(logits.shape[1], generator=gen)[:max_pixels]
        logits, targets, wts = logits[:, keep], targets[:, keep], wts[:, keep]
    return logits, targets, wts


def fit_platt(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
              iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and bias minimising weighted BCE of sigmoid(scale * logit + bias)."""
    c = logits.shape[0]
    scale = torch.ones(c, requires_grad=True)
    bias = torch.zeros(c, requires_grad=True)
    opt = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe")
    norm = weights.sum(1).clamp_min(1.0)

    def closure():
        opt.zero_grad()
        z = logits * scale[:, None] + bias[:, None]
        loss = ((F.binary_cross_entropy_with_logits(z, targets, reduction="none") * weights).sum(1) / norm).sum()
        loss.backward()
        return loss

    opt.step(closure)
    scale = scale.detach()
    bias = bias.detach()
    unlabelled = weights.sum(1) == 0  # no data: leave that structure as it was
    scale[unlabelled], bias[unlabelled] = 1.0, 0.0
    return scale, bias


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                 scale: torch.Tensor, bias: torch.Tensor) -> list[float]:
    z = logits * scale[:, None] + bias[:, None]
    per = F.binary_cross_entropy_with_logits(z, targets, reduction="none") * weights
    return (per.sum(1) / weights.sum(1).clamp_min(1.0)).tolist()


def calibrate(network, inputs: np.ndarray, masks: np.ndarray, weights: np.ndarray,
              diffusion: DiffusionConfig, device: torch.device, steps: int, fused_steps: int) -> dict:
    """Fit and install the calibration on `network`; returns a record for model.json."""
    logits, targets, wts = collect_logits(network, inputs, masks, weights, diffusion, device, steps, fused_steps)
    ones, zeros = torch.ones(logits.shape[0]), torch.zeros(logits.shape[0])
    before = weighted_bce(logits, targets, wts, ones, zeros)
    scale, bias = fit_platt(logits, targets, wts)
    after = weighted_bce(logits, targets, wts, scale, bias)
    network.logit_scale.copy_(scale.to(network.logit_scale.device))
    network.logit_bias.copy_(bias.to(network.logit_bias.device))
    return {"method": "Platt scaling per structure on held-out slices, fused timesteps",
            "scale": [round(v, 4) for v in scale.tolist()], "bias": [round(v, 4) for v in bias.tolist()],
            "bce_before": [round(v, 4) for v in before], "bce_after": [round(v, 4) for v in after],
            "pixels": int(logits.shape[1])}
