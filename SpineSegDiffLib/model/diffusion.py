"""Diffusion on segmentation masks: training loss, DDIM ensemble sampling, step fusion.

Masks live in [-1, 1] (``2 * mask - 1``). The network predicts the clean mask x0 as
logits; the x0 handed to the scheduler is ``2 * sigmoid(logits) - 1``. Noising and
the DDIM step (eta 0) are MONAI's ``DDIMScheduler`` with a cosine schedule and
``prediction_type="sample"``.

Fusion (SpineSegDiff): at each of the last Ts DDIM steps, average the x0
probabilities over the S samples; then take the weighted sum over those steps with
weights exp(-a (Ts - t) / Ts), a = Ts / 2, t = 1..Ts, normalised (the last step
weighs most). Threshold at 0.5.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.schedulers import DDIMScheduler

# DiffusionConfig and the fusion weights are torch-free (the cached path of `segment` needs them)
from SpineSegDiffLib.model.diffusion_config import DiffusionConfig, fusion_weight_array
from SpineSegDiffLib.model.network import DiffUNet
from SpineSegDiffLib.model.uncertainty import (
    EnsembleStatistics,
    RunningEnsembleSums,
    UncertaintyMaps,
    uncertainty_maps,
)


def make_scheduler(config: DiffusionConfig) -> DDIMScheduler:
    """A fresh MONAI DDIM scheduler (cosine, x0 prediction, x0 clipped to [-1, 1])."""
    return DDIMScheduler(num_train_timesteps=config.train_steps, schedule=config.schedule,
                         prediction_type="sample", clip_sample=True)


@functools.lru_cache(maxsize=4)
def _training_scheduler(config: DiffusionConfig) -> DDIMScheduler:
    # only add_noise is used in training: it reads the schedule and changes no state
    return make_scheduler(config)


def set_sampling_timesteps(scheduler: DDIMScheduler, steps: int) -> torch.Tensor:
    """Set K evenly strided timesteps T-1, T-1-s, ... (s = T // K) on ``scheduler``.

    Why not ``scheduler.set_timesteps`` alone: it rounds a linspace (999, 888, ...)
    while ``step`` always moves to ``t - T // K`` (899); the two disagree, so the next
    network call would see x_t at a different t than the scheduler produced. A fixed
    stride starting at T-1 ("trailing" spacing) keeps them consistent and starts from
    pure noise.
    """
    scheduler.set_timesteps(steps)  # sets num_inference_steps, which step() uses
    stride = scheduler.num_train_timesteps // steps
    scheduler.timesteps = (scheduler.num_train_timesteps - 1) - stride * torch.arange(steps, dtype=torch.long)
    return scheduler.timesteps


def presegmentation_timesteps(t_max: int, steps: int) -> list[int]:
    """K timesteps evenly from t_max down (t_max, ..., ~t_max / K): the presegmentation start."""
    return torch.linspace(t_max, 0, steps + 1)[:-1].round().long().tolist()


def ddim_step_to(scheduler: DDIMScheduler, x0: torch.Tensor, t: int, prev_t: int,
                 x_t: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step (eta 0) from x_t at ``t`` to ``prev_t`` for a predicted x0.

    MONAI's ``step`` always moves by T // K; the presegmentation start's steps divide
    t_max, not T, so the target step is given here (same formula, x0 clipped to [-1, 1])."""
    alphas = scheduler.alphas_cumprod
    a_t = alphas[t]
    a_prev = alphas[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
    x0 = x0.clamp(-1.0, 1.0)
    eps = (x_t - a_t ** 0.5 * x0) / (1 - a_t) ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def fusion_weights(fused_steps: int) -> torch.Tensor:
    """Normalised weights exp(-a (Ts - t) / Ts), a = Ts / 2, t = 1..Ts (last step largest)."""
    return torch.from_numpy(fusion_weight_array(fused_steps))


# DiceLoss per (sample, channel), so partial-label weights can mask single structures
_dice = DiceLoss(sigmoid=True, reduction="none")


def segmentation_loss(logits: torch.Tensor, mask01: torch.Tensor,
                      channel_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Dice(sigmoid) + BCE-with-logits + MSE(sigmoid, mask), each averaged over annotated
    (sample, channel) pairs only.

    ``channel_weight`` (B, C) of 0/1 marks which structures each sample is annotated
    for; a 0 makes that channel contribute nothing (and get no gradient). A (B, C, H, W)
    weight map goes further and masks single pixels (labels that cover only part of a
    structure, e.g. vertebral bodies without posterior elements): every term is then
    a weighted mean over the pixels with weight > 0.
    """
    logits = logits.float()
    target = mask01.float()
    if channel_weight is None:
        channel_weight = torch.ones(logits.shape[:2], device=logits.device)
    weight = channel_weight.to(device=logits.device, dtype=torch.float32)
    pixel_weight = weight if weight.dim() == 4 else None
    if pixel_weight is not None:
        weight = (pixel_weight.sum((2, 3)) > 0).float()
    # clamp: a batch with nothing annotated gives a zero loss rather than 0/0
    denominator = weight.sum().clamp_min(1.0)

    def masked_mean(per_channel: torch.Tensor) -> torch.Tensor:
        # where() rather than multiply, so a nan/inf in an ignored channel cannot leak in
        return torch.where(weight > 0, per_channel * weight, 0.0).sum() / denominator

    bce_map = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    mse_map = (torch.sigmoid(logits) - target).square()
    if pixel_weight is None:
        dice = masked_mean(_dice(logits, target).reshape(weight.shape))
        bce = masked_mean(bce_map.mean((2, 3)))
        mse = masked_mean(mse_map.mean((2, 3)))
    else:
        w = pixel_weight
        wsum = w.sum((2, 3)).clamp_min(1e-6)
        prob = torch.sigmoid(logits)
        # MONAI DiceLoss's smoothing (1e-5) on weighted sums
        dice_pc = 1.0 - (2.0 * (w * prob * target).sum((2, 3)) + 1e-5) / (
            (w * prob).sum((2, 3)) + (w * target).sum((2, 3)) + 1e-5)
        dice = masked_mean(dice_pc)
        bce = masked_mean((w * bce_map).sum((2, 3)) / wsum)
        mse = masked_mean((w * mse_map).sum((2, 3)) / wsum)
    return {"loss": dice + bce + mse, "dice": dice, "bce": bce, "mse": mse}


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # draw on the generator's own device, so a seeded CPU generator gives the same
    # noise whatever device the model runs on
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def diffusion_loss(model: DiffUNet, image: torch.Tensor, mask01: torch.Tensor, *,
                   channel_weight: torch.Tensor | None = None, timesteps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None,
                   config: DiffusionConfig | None = None) -> dict[str, torch.Tensor]:
    """One training batch: t ~ U{0..T-1}, x_t = noised (2 * mask - 1), loss on x0 logits.

    Returns ``loss`` (to backpropagate), its terms ``dice``, ``bce``, ``mse``, the
    ``timesteps`` used and the x0 ``logits``.
    """
    config = config or DiffusionConfig()
    scheduler = _training_scheduler(config)
    batch, device = image.shape[0], image.device
    if timesteps is None:
        source = generator.device if generator is not None else device
        timesteps = torch.randint(0, config.train_steps, (batch,), generator=generator, device=source)
    timesteps = timesteps.to(device)
    target = mask01.float()
    noise = _randn(tuple(target.shape), generator, device)
    x_t = scheduler.add_noise(2.0 * target - 1.0, noise, timesteps)
    logits = model(image, x_t, timesteps)
    terms = segmentation_loss(logits, target, channel_weight)
    terms["timesteps"] = timesteps
    terms["logits"] = logits  # for terms added on top (the vertebra size prior)
    return terms


@dataclass
class EnsembleResult:
    """Fused ensemble output for B slices."""

    probabilities: torch.Tensor  # (B, C, H, W) fused sigmoid probabilities
    mask: torch.Tensor  # (B, C, H, W) bool, probabilities > 0.5
    statistics: EnsembleStatistics  # per fused step sample means: the uncertainty inputs
    weights: torch.Tensor  # (Ts,) fusion weights used
    timesteps: torch.Tensor  # (K,) DDIM timesteps used

    def uncertainty(self, extras: bool = True) -> UncertaintyMaps:
        return uncertainty_maps(self.statistics, extras)


@torch.inference_mode()
def sample_ensemble(model: DiffUNet, image: torch.Tensor, samples: int, steps: int, fused_steps: int,
                    generator: torch.Generator | None = None, features: list[torch.Tensor] | None = None,
                    progress: Callable[[int, int], None] | None = None, chunk: int | None = None,
                    config: DiffusionConfig | None = None,
                    initial_noise: torch.Tensor | None = None) -> EnsembleResult:
    """DDIM-sample ``samples`` masks for B slices ``image`` (B, C_img, H, W) and fuse them.

    The image is encoded once (or ``features`` from ``model.encode`` are reused). Samples
    run batched as S * B rows, ``chunk`` samples at a time to bound memory. Sample s
    starts from its own noise draw (in sample order), so results do not depend on
    ``chunk``, and samples differ only by their starting noise. ``fused_steps`` larger
    than ``steps`` is clamped to ``steps``. ``progress(done, total)`` is called after
    every network call; total = steps * number of chunks. Runs under the caller's
    autocast / device; statistics are float32. ``initial_noise`` (S, B, C, H, W), when
    given, replaces the generator's draws (callers that need results independent of how
    slices are batched draw it per slice).
    """
    config = config or DiffusionConfig()
    if samples < 1 or steps < 1 or fused_steps < 1:
        raise ValueError("samples, steps and fused_steps must be at least 1")
    fused_steps = config.fused_steps_for(steps, fused_steps)
    chunk = max(1, min(chunk or samples, samples))
    scheduler = make_scheduler(config)
    timesteps = set_sampling_timesteps(scheduler, steps)
    batch, device = image.shape[0], image.device
    if features is None:
        features = model.encode(image)
    shape = (batch, model.config.num_classes, *image.shape[-2:])
    sums = RunningEnsembleSums(fused_steps)
    chunks = [range(start, min(start + chunk, samples)) for start in range(0, samples, chunk)]
    total, done = len(chunks) * steps, 0

    def after_call() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for members in chunks:
        # per-sample draws: sample s gets the same noise whatever the chunk size
        if initial_noise is not None:
            x_t = initial_noise[members.start:members.stop].to(device).reshape(-1, *shape[1:])
        else:
            x_t = torch.cat([_randn(shape, generator, device) for _ in members])
        for fused_index, probabilities in denoise_trajectories(model, image, features, x_t, scheduler,
                                                               fused_steps, after_call):
            sums.add(fused_index, probabilities.reshape(len(members), *shape))

    statistics = sums.statistics()
    weights = fusion_weights(fused_steps).to(device)
    fused = fuse_steps(statistics.mean_probability, weights)
    return EnsembleResult(probabilities=fused, mask=fused > 0.5, statistics=statistics,
                          weights=weights, timesteps=timesteps)


def fuse_steps(mean_probability: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over the fused steps: (Ts, B, C, H, W) sample means -> (B, C, H, W)."""
    weights = weights.to(mean_probability.device, torch.float32)
    # elementwise, not tensordot: autocast would turn a matmul into bfloat16/float16
    return (weights.reshape(-1, *[1] * (mean_probability.dim() - 1)) * mean_probability.float()).sum(0)


def denoise_trajectories(model: DiffUNet, image: torch.Tensor, features: list[torch.Tensor],
                         x_t: torch.Tensor, scheduler: DDIMScheduler, fused_steps: int,
                         after_call: Callable[[], None] | None = None,
                         timesteps: list[int] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Run DDIM from ``x_t`` (S * B rows, sample-major) for the scheduler's timesteps, or
    for explicit ``timesteps`` (descending; the presegmentation start from t_max).

    ``image`` and ``features`` are those of the B slices (features are broadcast over the
    S samples). Yields ``(fused_index, probabilities)`` at each of the last
    ``fused_steps`` steps: the sigmoid x0 probabilities (S * B, C, H, W), float32.
    """
    explicit = timesteps is not None
    timesteps = list(timesteps) if explicit else scheduler.timesteps.tolist()
    first_fused = len(timesteps) - min(fused_steps, len(timesteps))
    device = x_t.device
    rows = x_t.shape[0]
    image_rows = image.repeat(rows // image.shape[0], 1, 1, 1)  # once, not per step
    for index, t in enumerate(timesteps):
        logits = model.denoise(x_t, torch.tensor([t], device=device), image_rows, features)
        probabilities = torch.sigmoid(logits.float())
        if explicit:
            prev_t = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            x_t = ddim_step_to(scheduler, 2.0 * probabilities - 1.0, t, prev_t, x_t)
        else:
            x_t, _ = scheduler.step(2.0 * probabilities - 1.0, t, x_t)
        if after_call is not None:
            after_call()
        if index >= first_fused:
            yield index - first_fused, probabilities
