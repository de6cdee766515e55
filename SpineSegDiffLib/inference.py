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
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
import torch

from SpineSegDiffLib import __version__
from SpineSegDiffLib.devices import autocast_dtype, choose_device, is_out_of_memory
from SpineSegDiffLib.errors import InputError
from SpineSegDiffLib.geometry import GridSpec, ModelGrid, to_model_grid
from SpineSegDiffLib.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.postprocess import clean_masks, to_labelmap
from SpineSegDiffLib.slices import context_stack

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
    from SpineSegDiffLib.diffusion import DiffusionConfig
    from SpineSegDiffLib.modelfile import build_model, load_model_file

    dev, note = choose_device(device)
    model_file = load_model_file(path)
    network = build_model(model_file, dev)
    network.eval()
    meta = model_file.metadata
    grid = GridSpec(**meta["preprocessing"]["grid"])
    if note:
        _warn(note)
    return LoadedModel(network, meta, grid, DiffusionConfig.from_dict(meta["diffusion"]), dev,
                       Path(path), note)


@dataclass
class SegmentSettings:
    samples: int = 5
    steps: int = 10
    fused_steps: int | None = None  # None: the model's default
    seed: int = 0
    batch_slices: int | None = None  # None: chosen from memory
    extras: bool = False  # also variance and mutual information
    min_component_mm3: float = 30.0

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


def default_batch_slices(model: LoadedModel, samples: int, size: int) -> int:
    """Slices per batch so that samples x slices activations fit a memory budget."""
    features = model.metadata["architecture"].get("features", [32] * 6)
    # rough bytes of activations of one sample-slice through the U-Net (fp32, a
    # handful of live tensors per scale); measured within 2x on CPU
    per_item = sum(f * (size / 2 ** min(i, 4)) ** 2 for i, f in enumerate(features)) * 4 * 12
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        budget = free * 0.5
    else:
        budget = 1.5 * 1024 ** 3
    return int(max(1, min(64, budget // max(per_item * samples, 1))))


def predict_on_grid(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings,
                    progress: Callable[[float, str], None] | None = None) -> GridPrediction:
    """Run the ensemble over all slices (n, H, W) of a model grid, batched."""
    from SpineSegDiffLib.diffusion import sample_ensemble

    n, h, w = slices.shape
    fused = settings.fused_steps or model.diffusion.fused_steps
    fused = max(1, min(fused, settings.steps))
    inputs = torch.from_numpy(context_stack(slices.astype(np.float32), model.image_channels))
    batch = settings.batch_slices or default_batch_slices(model, settings.samples, h)
    out = GridPrediction(np.zeros((n, NUM_CLASSES, h, w), np.float32),
                         np.zeros((n, NUM_CLASSES, h, w), np.float32))
    if settings.extras:
        out.variance = np.zeros_like(out.probabilities)
        out.mutual_information = np.zeros_like(out.probabilities)
    device = model.device
    start = 0
    while start < n:
        stop = min(n, start + batch)
        noise = starting_noise(settings.seed, settings.samples, range(start, stop), (NUM_CLASSES, h, w))

        def step_progress(step: int, total: int, _start=start, _stop=stop) -> None:
            if progress:
                done = (_start + (_stop - _start) * (step / max(total, 1))) / n
                progress(done, f"slices {_start + 1}-{_stop} of {n}, step {step}/{total}")

        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), _autocast(device):
                result = sample_ensemble(model.network, inputs[start:stop].to(device),
                                         samples=settings.samples, steps=settings.steps,
                                         fused_steps=fused, initial_noise=noise,
                                         progress=step_progress, config=model.diffusion)
        except Exception as exc:  # GPU out of memory: smaller batch, then the CPU
            if not is_out_of_memory(exc):
                raise
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
        out.network_seconds += time.perf_counter() - t0
        out.network_evaluations += settings.samples * settings.steps * (stop - start)
        unc = result.uncertainty(extras=settings.extras)
        out.probabilities[start:stop] = result.probabilities.float().cpu().numpy()
        out.entropy[start:stop] = unc.entropy.float().cpu().numpy()
        if settings.extras:
            out.variance[start:stop] = unc.variance.float().cpu().numpy()
            out.mutual_information[start:stop] = unc.mutual_information.float().cpu().numpy()
        start = stop
    return out


def starting_noise(seed: int, samples: int, slice_indices: range, shape: tuple[int, int, int]) -> torch.Tensor:
    """(S, B, C, H, W) starting noise drawn per slice and sample, so a result never
    depends on how slices are batched, and sample s is the same whatever S is."""
    out = torch.empty((samples, len(slice_indices), *shape))
    for j, i in enumerate(slice_indices):
        for s in range(samples):
            g = torch.Generator().manual_seed(((seed * 1_000_003 + i) * 1009 + s) % (2 ** 63))
            out[s, j] = torch.randn(shape, generator=g)
    return out


class _autocast:
    def __init__(self, device: torch.device) -> None:
        dtype = autocast_dtype(device)
        self._ctx = torch.autocast(device.type, dtype=dtype) if dtype else None

    def __enter__(self):
        return self._ctx.__enter__() if self._ctx else None

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc) if self._ctx else False


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
    pred = predict_on_grid(model, grid.slices, settings,
                           lambda f, msg: report("sample", 0.05 + 0.85 * f, msg))
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
    fused = max(1, min(settings.fused_steps or model.diffusion.fused_steps, settings.steps))
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
        "structures": structure_summary(image, masks, ent_arrays),
    }
    return SegmentationResult(labelmap, masks, combined, ent_images, prob_images, extras, summary, grid)


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
        m = masks[s.value - 1]
        region = ndimage.binary_dilation(m, iterations=1) if m.any() else m
        u = uncertainty[s.value - 1]
        entry = {"label": s.value, "name": s.name, "volume_ml": round(float(m.sum()) * voxel_ml, 3),
                 "mean_uncertainty": round(float(u[region].mean()), 5) if region.any() else 0.0,
                 "peak_uncertainty_lps": None}
        if region.any():
            smooth = ndimage.gaussian_filter(u.astype(np.float32), sigma=1.0)
            smooth = np.where(region, smooth, -1.0)
            z, y, x = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
            entry["peak_uncertainty_lps"] = [round(v, 3) for v in
                                             image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))]
        out[s.key] = entry
    return out


def dice_per_structure(masks: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of (C, ...) bool masks against a labelmap with values 1..C."""
    out = {}
    for s in STRUCTURES:
        p, g = masks[s.value - 1], reference == s.value
        denom = p.sum() + g.sum()
        out[s.key] = float(2.0 * np.logical_and(p, g).sum() / denom) if denom else math.nan
    return out
