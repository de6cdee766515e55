"""Segment a volume: model grid, ensemble sampling, fusion, clean-up, outputs.

The pipeline: bring the MRI onto the model grid (sagittal slices), run the DDIM
ensemble on batches of slices (the image encoder runs once per slice), fuse the
last steps, clean the masks on the grid, then map probabilities and uncertainty
back onto the input's exact geometry and threshold there (smooth boundaries even
when the grid is coarser than the input).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import SimpleITK as sitk
import torch

from SpineSegDiffLib import __version__
from SpineSegDiffLib.model.devices import autocast_context, autocast_dtype, choose_device, is_out_of_memory
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.grid.geometry import GridSpec, ModelGrid, to_model_grid
from SpineSegDiffLib.core.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.inference.postprocess import clean_masks, to_labelmap
from SpineSegDiffLib.grid.slices import context_stack

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.sample_cache import SampleCache

MAX_SAMPLES = 64
MAX_STEPS = 1000


@dataclass
class LoadedModel:
    network: torch.nn.Module
    metadata: dict
    grid_spec: GridSpec
    diffusion: Any  # diffusion.DiffusionConfig
    device: torch.device
    path: Path | None = None
    device_note: str | None = None

    @property
    def image_channels(self) -> int:
        return int(self.metadata["architecture"].get("image_channels", 1))

    @property
    def identity(self) -> dict:
        return {"id": self.metadata.get("id"), "version": self.metadata.get("version"),
                "path": str(self.path) if self.path else None}

    def default(self, key: str, fallback: int) -> int:
        return int(self.metadata.get("inference_defaults", {}).get(key, fallback))


def load_model(path: str | Path, device: str = "auto") -> LoadedModel:
    """Read a model `.zip` (never unpickles) and put the network on a device."""
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.modelfile import build_model, load_model_file

    dev, note = choose_device(device)
    model_file = load_model_file(path)
    network = build_model(model_file, dev)
    network.eval()
    if dev.type == "cpu":
        use_fast_pooling(network)
    meta = model_file.metadata
    grid = GridSpec(**meta["preprocessing"]["grid"])
    if note:
        _warn(note)
    return LoadedModel(network, meta, grid, DiffusionConfig.from_dict(meta["diffusion"]), dev,
                       Path(path), note)


class MaxPool2x2(torch.nn.Module):
    """2x2 max-pooling as three elementwise maxima: the same values as nn.MaxPool2d(2) on
    even sizes, about 6x faster on the CPU, where PyTorch's pooling kernel also computes
    indices (it was 11 % of a denoiser call in the profile in benchmarks/README.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def use_fast_pooling(network: torch.nn.Module) -> int:
    """Swap plain 2x2 nn.MaxPool2d layers for ``MaxPool2x2`` (inference only); returns how many.

    Grid sizes are multiples of 16, so every pooled map has even height and width."""
    swapped = 0
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.MaxPool2d) and _is_plain_2x2(child):
                setattr(module, name, MaxPool2x2())
                swapped += 1
    return swapped


def _is_plain_2x2(pool: torch.nn.MaxPool2d) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (pair(pool.kernel_size) == (2, 2) and pair(pool.stride) == (2, 2) and pair(pool.padding) == (0, 0)
            and pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices)


@dataclass
class SegmentSettings:
    samples: int = 5
    steps: int = 10
    fused_steps: int | None = None  # None: the model's default
    seed: int = 0
    batch_slices: int | None = None  # None: chosen from memory
    samples_per_call: int | None = None  # None: 1 on the CPU, from memory on a GPU (batch_plan)
    extras: bool = False  # also variance and mutual information
    min_component_mm3: float = 30.0
    cache: bool = False  # reuse / keep drawn samples on disk (sample_cache.py)
    cache_dir: Path | None = None  # None: sample_cache.ensembles_dir()

    def validate(self) -> None:
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InputError(f"--samples must be between 1 and {MAX_SAMPLES}, got {self.samples}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"--steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if self.fused_steps is not None and not 1 <= self.fused_steps:
            raise InputError(f"--fused-steps must be at least 1, got {self.fused_steps}")


@dataclass
class GridPrediction:
    """Everything the ensemble produced, on the model grid."""

    probabilities: np.ndarray  # (n, C, H, W) fused, float32
    entropy: np.ndarray  # (n, C, H, W) per-structure uncertainty in [0, 1]
    variance: np.ndarray | None = None  # (n, C, H, W)
    mutual_information: np.ndarray | None = None  # (n, C, H, W)
    network_seconds: float = 0.0
    network_evaluations: int = 0
    samples_from_cache: int = 0


@dataclass
class SegmentationResult:
    labelmap: sitk.Image  # uint8 on the input geometry
    masks: np.ndarray  # (C, z, y, x) bool on the input geometry
    uncertainty: sitk.Image  # float32 combined uncertainty on the input geometry
    structure_uncertainty: list[sitk.Image]  # per structure, input geometry
    probabilities: list[sitk.Image]  # per structure, input geometry
    extras: dict[str, list[sitk.Image]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    grid: ModelGrid | None = None


# Activation memory of one slice through the network is about this many fp32 values
# per feature-map element (a handful of live tensors per scale; measured within 2x on CPU).
_LIVE_TENSORS_PER_SCALE = 12
# On the CPU, more slices per call bring no more speed (see benchmarks/README.md), only memory.
CPU_MAX_SLICES = 16
CPU_MEMORY_BUDGET = 1.5 * 1024 ** 3


def slice_bytes(model: LoadedModel, size: int) -> float:
    """Rough activation bytes of one slice through the U-Net at size x size."""
    features = model.metadata["architecture"].get("features", [32] * 6)
    values = sum(f * (size / 2 ** min(i, 4)) ** 2 for i, f in enumerate(features))
    return values * 4 * _LIVE_TENSORS_PER_SCALE


def batch_plan(model: LoadedModel, n_slices: int, size: int, batch_slices: int | None = None,
               samples_per_call: int | None = None) -> tuple[int, int]:
    """(slices per network call, samples per network call), from memory, never from S.

    Every call holds the same group of samples (0..G-1, G..2G-1, ...) of the same slices,
    so sample s comes out bit-identical whether it is drawn alone, with others, or read
    back from the sample cache. The CPU gains nothing from more rows per call (see
    benchmarks/README.md), so it draws one sample per call; a GPU fills its memory with
    G samples per call (from its total memory, so the plan, and the cache key, do not
    change from run to run). Slice batches are balanced (18 slices: 9 + 9, not 16 + 2).
    """
    per_slice = slice_bytes(model, size)
    if model.device.type == "cuda":
        total = torch.cuda.get_device_properties(model.device).total_memory
        rows = max(1, int(total * 0.4 // per_slice))
    else:
        rows = max(1, int(min(CPU_MEMORY_BUDGET // per_slice, CPU_MAX_SLICES)))
    most = batch_slices or max(1, min(rows, n_slices))
    calls = math.ceil(n_slices / most)
    slices_per_call = math.ceil(n_slices / calls)
    if samples_per_call is None:
        samples_per_call = 1 if model.device.type != "cuda" else max(1, min(8, rows // slices_per_call))
    return slices_per_call, samples_per_call


@dataclass
class DrawnSamples:
    """Per-sample probabilities at the fused steps, as uint8 levels."""

    levels: np.ndarray  # (S_new, Ts, n, C, H, W) uint8
    network_seconds: float
    network_evaluations: int
    first: int = 0  # sample index of levels[0]


def draw_samples(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings, sample_indices: range,
                 fused_steps: int, progress: Callable[[float, str], None] | None = None) -> DrawnSamples:
    """Run DDIM for (at least) samples ``sample_indices`` on all slices (n, H, W) of a grid.

    Each slice is encoded once; a network call holds one group of G samples of a batch of
    slices (``batch_plan``). Groups are whole (0..G-1, G..2G-1, ...): the result may hold
    a few samples more than asked (``first`` says where it starts), and sample s of slice
    i always goes through the same calls from the same noise, whatever else is drawn.
    """
    from SpineSegDiffLib.model.diffusion import denoise_trajectories, make_scheduler, set_sampling_timesteps
    from SpineSegDiffLib.model.uncertainty import quantise_probabilities

    n, h, w = slices.shape
    batch, group = batch_plan(model, n, h, settings.batch_slices, settings.samples_per_call)
    if len(sample_indices) == 0:
        return DrawnSamples(np.zeros((0, fused_steps, n, NUM_CLASSES, h, w), np.uint8), 0.0, 0,
                            sample_indices.start)
    first = sample_indices.start // group * group
    stop_sample = -(-sample_indices.stop // group) * group
    groups = [range(g, g + group) for g in range(first, stop_sample, group)]
    out = DrawnSamples(np.zeros((stop_sample - first, fused_steps, n, NUM_CLASSES, h, w), np.uint8), 0.0, 0, first)
    inputs = torch.from_numpy(context_stack(slices.astype(np.float32), model.image_channels))
    total_rows = (stop_sample - first) * settings.steps * n
    shown = 0.0
    device = model.device
    start = 0
    while start < n:
        stop = min(n, start + batch)
        t0 = time.perf_counter()
        done_before = out.network_evaluations

        def after_call(_start=start, _stop=stop) -> None:
            nonlocal shown
            out.network_evaluations += (_stop - _start) * group
            shown = max(shown, out.network_evaluations / total_rows)
            if progress:
                progress(shown, f"slices {_start + 1}-{_stop} of {n}")

        try:
            with torch.inference_mode(), autocast_context(device):
                image = inputs[start:stop].to(device)
                features = model.network.encode(image)  # once per slice, for all samples and steps
                for members in groups:
                    noise = starting_noise(settings.seed, members, range(start, stop), (NUM_CLASSES, h, w))
                    scheduler = make_scheduler(model.diffusion)
                    set_sampling_timesteps(scheduler, settings.steps)
                    x_t = noise.to(device).reshape(-1, NUM_CLASSES, h, w)  # sample-major rows
                    k = members.start - first
                    for fused_index, probabilities in denoise_trajectories(
                            model.network, image, features, x_t, scheduler, fused_steps, after_call):
                        levels = quantise_probabilities(probabilities).cpu().numpy()
                        out.levels[k:k + group, fused_index, start:stop] = \
                            levels.reshape(group, stop - start, NUM_CLASSES, h, w)
        except Exception as exc:  # GPU out of memory: smaller batch, then the CPU
            if not is_out_of_memory(exc):
                raise
            out.network_evaluations = done_before  # this batch starts again
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                _warn(f"out of GPU memory: retrying with {batch} slice(s) per batch")
                continue
            if device.type != "cpu":
                _warn("out of GPU memory even with one slice per batch: continuing on the CPU")
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


# slices fused at a time: bounds the int32/float32 temporaries of the statistics
_FUSE_SLICES = 8


def fuse_samples(samples: list[np.ndarray], fused_steps: int, extras: bool = False) -> GridPrediction:
    """Fusion and uncertainty from per-sample levels (each (Ts, n, C, H, W) uint8), no network.

    The same function serves fresh and cached samples, so both give identical results.
    """
    from SpineSegDiffLib.model.diffusion import fuse_steps, fusion_weights
    from SpineSegDiffLib.model.uncertainty import statistics_from_levels, uncertainty_maps

    _, n, c, h, w = samples[0].shape
    out = GridPrediction(np.zeros((n, c, h, w), np.float32), np.zeros((n, c, h, w), np.float32))
    if extras:
        out.variance = np.zeros_like(out.probabilities)
        out.mutual_information = np.zeros_like(out.probabilities)
    weights = fusion_weights(fused_steps)
    for start in range(0, n, _FUSE_SLICES):
        part = slice(start, min(n, start + _FUSE_SLICES))
        stats = statistics_from_levels(samples, part)
        out.probabilities[part] = fuse_steps(stats.mean_probability, weights).numpy()
        maps = uncertainty_maps(stats, extras)
        out.entropy[part] = maps.entropy.numpy()
        if extras:
            out.variance[part] = maps.variance.numpy()
            out.mutual_information[part] = maps.mutual_information.numpy()
    return out


def predict_on_grid(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings,
                    progress: Callable[[float, str], None] | None = None,
                    cache: "SampleCache | None" = None) -> GridPrediction:
    """Run the ensemble over all slices (n, H, W) of a model grid and fuse it.

    With a ``cache``, samples already on disk are read instead of drawn (lowering S
    costs no network evaluation), and only the missing ones are drawn and stored.
    """
    fused = max(1, min(settings.fused_steps or model.diffusion.fused_steps, settings.steps))
    samples = cache.load_leading(settings.samples) if cache is not None else []
    cached = len(samples)
    drawn = draw_samples(model, slices, settings, range(cached, settings.samples), fused, progress)
    for offset, levels in enumerate(drawn.levels):
        index = drawn.first + offset
        if cache is not None and index >= cached:  # whole groups: keep the extra ones for later
            cache.store(index, levels)
        if cached <= index < settings.samples:
            samples.append(levels)
    out = fuse_samples(samples, fused, settings.extras)
    out.network_seconds = drawn.network_seconds
    out.network_evaluations = drawn.network_evaluations
    out.samples_from_cache = cached
    return out


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


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def _decided_probabilities(prob: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Probabilities whose 0.5 level set equals the cleaned masks on the grid.

    Linear interpolation of these onto the input grid, then thresholding at 0.5, keeps
    the clean-up's decisions while giving sub-grid-voxel smooth boundaries.
    """
    eps = 1e-3
    return np.where(keep, np.maximum(prob, 0.5 + eps), np.minimum(prob, 0.5 - eps)).astype(np.float32)


def segment_image(image: sitk.Image, model: LoadedModel, settings: SegmentSettings,
                  progress: Callable[..., None] | None = None, input_name: str = "") -> SegmentationResult:
    """Segment one validated 3-D MRI; every output lies on `image`'s exact geometry."""
    settings.validate()
    report = progress or (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report("grid", 0.02, "resampling onto the model grid")
    grid = to_model_grid(image, model.grid_spec)
    timings["grid_s"] = time.perf_counter() - t0
    notes = [model.device_note] if model.device_note else []  # said once, at load_model
    if grid.acquisition_plane != "sagittal":
        notes.append(f"{grid.acquisition_plane} acquisition reoriented to sagittal slices "
                     f"({grid.slices.shape[0]} slices); results are mapped back onto the input grid")
        _warn(notes[-1])

    t1 = time.perf_counter()
    fused = max(1, min(settings.fused_steps or model.diffusion.fused_steps, settings.steps))
    cache = open_sample_cache(image, grid, model, settings, fused) if settings.cache else None
    timings["cache_key_s"] = time.perf_counter() - t1
    pred = predict_on_grid(model, grid.slices, settings,
                           lambda f, msg: report("sample", 0.05 + 0.85 * f, msg), cache=cache)
    timings["ensemble_s"] = time.perf_counter() - t1
    timings["network_s"] = pred.network_seconds

    t2 = time.perf_counter()
    report("fuse", 0.91, "cleaning masks and mapping back onto the input geometry")
    spacing = grid.grid_image.GetSpacing()
    keep = clean_masks(pred.probabilities > 0.5, float(np.prod(spacing)), settings.min_component_mm3)
    decided = _decided_probabilities(pred.probabilities, keep)
    prob_images = [grid.to_input_geometry(decided[:, c], interpolation="linear") for c in range(NUM_CLASSES)]
    prob_arrays = np.stack([sitk.GetArrayViewFromImage(p) for p in prob_images])
    masks = prob_arrays > 0.5
    # to_labelmap wants the structure axis second: (z, C, y, x)
    labelmap_arr = to_labelmap(np.moveaxis(masks, 0, 1), np.moveaxis(prob_arrays, 0, 1))
    # from here on the masks are the labelmap's, so volumes and scores match what is written
    masks = np.stack([labelmap_arr == s.value for s in STRUCTURES])
    labelmap = sitk.GetImageFromArray(labelmap_arr)
    labelmap.CopyInformation(image)
    ent_images = [grid.to_input_geometry(pred.entropy[:, c], interpolation="linear") for c in range(NUM_CLASSES)]
    ent_arrays = np.stack([sitk.GetArrayViewFromImage(e) for e in ent_images])
    combined = sitk.GetImageFromArray(ent_arrays.max(axis=0).astype(np.float32))
    combined.CopyInformation(image)
    extras: dict[str, list[sitk.Image]] = {}
    if settings.extras:
        extras["variance"] = [grid.to_input_geometry(pred.variance[:, c], interpolation="linear")
                              for c in range(NUM_CLASSES)]
        extras["mutual_information"] = [grid.to_input_geometry(pred.mutual_information[:, c],
                                                               interpolation="linear")
                                        for c in range(NUM_CLASSES)]
    timings["postprocess_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "version": 1,
        "spinesegdiff_version": __version__,
        "input": input_name,
        "model": model.identity,
        "settings": {"samples": settings.samples, "steps": settings.steps, "fused_steps": fused,
                     "seed": settings.seed, "device": str(model.device),
                     "grid": {"spacing_mm": list(spacing), "size": model.grid_spec.size,
                              "slices": int(grid.slices.shape[0])},
                     "acquisition_plane": grid.acquisition_plane},
        "notes": notes,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "network_evaluations": pred.network_evaluations,
        "cache": {"enabled": cache is not None, "samples_from_cache": pred.samples_from_cache,
                  "samples_computed": settings.samples - pred.samples_from_cache,
                  "folder": str(cache.folder) if cache is not None else None},
        "structures": structure_summary(image, masks, ent_arrays),
    }
    return SegmentationResult(labelmap, masks, combined, ent_images, prob_images, extras, summary, grid)


def open_sample_cache(image: sitk.Image, grid: ModelGrid, model: LoadedModel, settings: SegmentSettings,
                      fused_steps: int) -> "SampleCache | None":
    """The disk cache entry for this input, model and setting; None if it cannot be used."""
    from dataclasses import asdict

    from SpineSegDiffLib.model.modelfile import sha256_file
    from SpineSegDiffLib.inference.sample_cache import SampleCache, ensemble_key

    if model.path is None or not model.path.is_file():
        return None  # no file to identify the weights by: never risk a wrong hit
    parts = {"model_sha256": sha256_file(model.path), "steps": settings.steps, "fused_steps": fused_steps,
             "seed": settings.seed, "grid": asdict(model.grid_spec), "image_channels": model.image_channels,
             "diffusion": model.diffusion.to_dict(),
             # what changes the floats of a sample: the device, its precision, the sample group
             # (slices per call is left out: it moves a level in a handful of voxels at most)
             "device": model.device.type, "autocast": str(autocast_dtype(model.device)),
             "samples_per_call": batch_plan(model, grid.slices.shape[0], grid.slices.shape[1],
                                            settings.batch_slices, settings.samples_per_call)[1],
             "geometry": [image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection()]}
    key = ensemble_key(parts, [sitk.GetArrayViewFromImage(image), grid.slices])
    n, h, w = grid.slices.shape
    try:
        return SampleCache.open(key, (fused_steps, n, NUM_CLASSES, h, w), root=settings.cache_dir,
                                description={"model": model.identity, "steps": settings.steps,
                                             "fused_steps": fused_steps, "seed": settings.seed})
    except OSError as exc:  # an unwritable cache folder must not stop a segmentation
        _warn(f"sample cache unavailable ({exc}); continuing without it")
        return None


def structure_summary(image: sitk.Image, masks: np.ndarray, uncertainty: np.ndarray) -> dict:
    """Per structure: volume, mean uncertainty on and around it, and where it peaks.

    The mean is taken over the structure dilated by one voxel, so boundary doubt (where
    most of it lives) counts; the peak is the most uncertain point of that region after
    light smoothing, so one noisy voxel does not decide where the user is sent.
    """
    from scipy import ndimage

    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    out = {}
    for s in STRUCTURES:
        full_mask = masks[s.value - 1]
        entry = {"label": s.value, "name": s.name, "volume_ml": round(float(full_mask.sum()) * voxel_ml, 3),
                 "mean_uncertainty": 0.0, "peak_uncertainty_lps": None}
        if full_mask.any():
            # work inside the structure's bounding box plus the reach of the dilation (1) and
            # of the Gaussian (4 sigma = 4 voxels): the same numbers, a fraction of the volume
            box = _box_around(full_mask, margin=5)
            m, u = full_mask[box], uncertainty[s.value - 1][box]
            region = ndimage.binary_dilation(m, iterations=1)
            entry["mean_uncertainty"] = round(float(u[region].mean()), 5)
            smooth = ndimage.gaussian_filter(u.astype(np.float32), sigma=1.0)
            smooth = np.where(region, smooth, -1.0)
            z, y, x = (int(i) + b.start for i, b in zip(np.unravel_index(int(np.argmax(smooth)), smooth.shape), box))
            entry["peak_uncertainty_lps"] = [round(v, 3) for v in image.TransformIndexToPhysicalPoint((x, y, z))]
        out[s.key] = entry
    return out


def _box_around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask``'s True voxels grown by ``margin``, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)
