"""Drawing ensemble samples: DDIM from per-slice, per-sample starting noise, with GPU out-of-memory fallback."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.crop import CropBox
from SpineSegDiffLib.grid.slices import context_stack
from SpineSegDiffLib.inference.batching import batch_plan
from SpineSegDiffLib.inference.loading import LoadedModel
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.model.devices import autocast_context, is_out_of_memory

if TYPE_CHECKING:
    pass



@dataclass
class DrawnSamples:
    """Per-sample probabilities at the fused steps, as uint8 levels."""

    levels: np.ndarray  # (S_new, Ts, n, C, H, W) uint8
    network_seconds: float
    network_evaluations: int
    first: int = 0  # sample index of levels[0]


def draw_samples(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings, sample_indices: range,
                 fused_steps: int, progress: Callable[[float, str], None] | None = None,
                 presegmentation: np.ndarray | None = None, t_max: int | None = None,
                 box: CropBox | None = None) -> DrawnSamples:
    """Run DDIM for (at least) samples ``sample_indices`` on all slices (n, H, W) of a grid.

    With a ``box`` (``grid/crop.py``), only its slices and pixels are sampled; the levels
    stay full-size with 0 (background, uncertainty 0) outside it. The image channels, the
    image encoder's maps and the starting noise are those of the whole grid cut to the box,
    so a box of whole slices gives exactly the uncropped values on its slices; an in-plane
    box changes the denoiser's border context and instance-norm statistics (measured in
    benchmarks/README.md, "Crop ablation").

    From pure noise, or, with ``presegmentation`` (n, C, H, W probabilities) and ``t_max``,
    from the presegmentation noised to t_max by the forward process with each sample's
    own noise, then ``settings.steps`` steps from t_max down.

    Each slice is encoded once; a network call holds one group of G samples of a batch of
    slices (``batch_plan``). Groups are whole (0..G-1, G..2G-1, ...): the result may hold
    a few samples more than asked (``first`` says where it starts), and sample s of slice
    i always goes through the same calls from the same noise, whatever else is drawn.
    """
    from SpineSegDiffLib.model.diffusion import (
        denoise_trajectories,
        make_scheduler,
        presegmentation_timesteps,
        set_sampling_timesteps,
    )
    from SpineSegDiffLib.model.uncertainty import quantise_probabilities

    n, full_h, full_w = slices.shape
    box = box or CropBox.whole(slices.shape)
    m, h, w = box.shape
    (s0, _), (r0, r1), (c0, c1) = box.slices, box.rows, box.cols
    batch, group = batch_plan(model, m, max(h, w), settings.batch_slices, settings.samples_per_call)
    if len(sample_indices) == 0:
        return DrawnSamples(np.zeros((0, fused_steps, n, NUM_CLASSES, full_h, full_w), np.uint8), 0.0, 0,
                            sample_indices.start)
    first = sample_indices.start // group * group
    stop_sample = -(-sample_indices.stop // group) * group
    groups = [range(g, g + group) for g in range(first, stop_sample, group)]
    out = DrawnSamples(np.zeros((stop_sample - first, fused_steps, n, NUM_CLASSES, full_h, full_w), np.uint8),
                       0.0, 0, first)
    # neighbours from the whole grid: the box's edge slices keep their real 2.5D context
    whole_inputs = torch.from_numpy(context_stack(slices.astype(np.float32), model.image_channels))
    inputs = whole_inputs[box.slices[0]:box.slices[1], :, r0:r1, c0:c1].contiguous()
    whole_slices = (h, w) == (full_h, full_w)
    if presegmentation is not None:
        presegmentation = box.cut(presegmentation)
    total_rows = (stop_sample - first) * settings.steps * m
    shown = 0.0
    device = model.device
    start = 0  # slice indices from here on count inside the box
    while start < m:
        stop = min(m, start + batch)
        t0 = time.perf_counter()
        done_before = out.network_evaluations

        def after_call(_start=start, _stop=stop) -> None:
            nonlocal shown
            out.network_evaluations += (_stop - _start) * group
            shown = max(shown, out.network_evaluations / total_rows)
            if progress:
                progress(shown, f"slices {_start + 1}-{_stop} of {m}")

        try:
            with torch.inference_mode(), autocast_context(device):
                image = inputs[start:stop].to(device)
                if whole_slices:
                    features = model.network.encode(image)  # once per slice, for all samples and steps
                else:  # the image encoder sees whole slices (its instance norms keep their statistics),
                    # its maps are cut to the box (on tile boundaries: exact at every scale)
                    features = [_cut_map(f, box) for f in
                                model.network.encode(whole_inputs[s0 + start:s0 + stop].to(device))]
                for members in groups:
                    # drawn at full size for the grid's own slice indices, then cut: the box sees
                    # the same noise as an uncropped run
                    noise = starting_noise(settings.seed, members, range(s0 + start, s0 + stop),
                                           (NUM_CLASSES, full_h, full_w))[..., r0:r1, c0:c1]
                    scheduler = make_scheduler(model.diffusion)
                    set_sampling_timesteps(scheduler, settings.steps)
                    x_t = noise.to(device).reshape(-1, NUM_CLASSES, h, w)  # sample-major rows
                    timesteps = None
                    if presegmentation is not None:
                        x_t = _noised_presegmentation(presegmentation[start:stop], x_t, scheduler, t_max)
                        timesteps = presegmentation_timesteps(t_max, settings.steps)
                    k = members.start - first
                    for fused_index, probabilities in denoise_trajectories(
                            model.network, image, features, x_t, scheduler, fused_steps, after_call,
                            timesteps):
                        levels = quantise_probabilities(probabilities).cpu().numpy()
                        out.levels[k:k + group, fused_index, s0 + start:s0 + stop, :, r0:r1, c0:c1] = \
                            levels.reshape(group, stop - start, NUM_CLASSES, h, w)
        except Exception as exc:  # GPU out of memory: smaller batch, then the CPU
            if not is_out_of_memory(exc):
                raise
            out.network_evaluations = done_before  # this batch starts again
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                warn(f"out of GPU memory: retrying with {batch} slice(s) per batch")
                continue
            if device.type != "cpu":
                warn("out of GPU memory even with one slice per batch: continuing on the CPU")
                device = torch.device("cpu")
                model.network.to(device)
                model.device = device
                continue
            raise
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.network_seconds += time.perf_counter() - t0
        start = stop
    return out


def _cut_map(feature: torch.Tensor, box: CropBox) -> torch.Tensor:
    """A whole-slice feature map (B, C, H/f, W/f) cut to the box's rows and columns at its scale."""
    _, full_h, full_w = box.full
    (r0, r1), (c0, c1) = box.rows, box.cols
    height, width = feature.shape[-2:]
    return feature[..., r0 * height // full_h:r1 * height // full_h, c0 * width // full_w:c1 * width // full_w]


def _noised_presegmentation(probabilities: np.ndarray, noise: torch.Tensor, scheduler, t_max: int) -> torch.Tensor:
    """Forward process q(x_t | x_pre) at t_max for every sample row (sample-major), x_pre in [-1, 1]."""
    x_pre = 2.0 * torch.from_numpy(probabilities).to(noise.device, torch.float32) - 1.0
    rows = noise.shape[0] // x_pre.shape[0]
    t = torch.full((noise.shape[0],), t_max, dtype=torch.long, device=noise.device)
    return scheduler.add_noise(x_pre.repeat(rows, 1, 1, 1), noise.float(), t)


def starting_noise(seed: int, samples: int | range, slice_indices: range,
                   shape: tuple[int, int, int]) -> torch.Tensor:
    """(S, B, C, H, W) starting noise drawn per slice and sample, so a result never
    depends on how slices are batched, and sample s is the same whatever S is.
    ``samples``: a count (samples 0..S-1) or the sample indices to draw."""
    indices = range(samples) if isinstance(samples, int) else samples
    out = torch.empty((len(indices), len(slice_indices), *shape))
    for j, i in enumerate(slice_indices):
        for k, s in enumerate(indices):
            g = torch.Generator().manual_seed(((seed * 1_000_003 + i) * 1009 + s) % (2 ** 63))
            out[k, j] = torch.randn(shape, generator=g)
    return out
