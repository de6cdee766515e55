"""Segment a volume: model grid, ensemble sampling, fusion, clean-up, outputs.

The pipeline: bring the MRI onto the model grid (sagittal slices), run the DDIM
ensemble on batches of slices (the image encoder runs once per slice), fuse the
last steps, clean the masks on the grid, then map probabilities and uncertainty
back onto the input's exact geometry and threshold there (smooth boundaries even
when the grid is coarser than the input).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.geometry import ModelGrid, to_model_grid
from SpineSegDiffLib.inference.fusion import GridPrediction, fuse_samples
from SpineSegDiffLib.inference.loading import LoadedModel
from SpineSegDiffLib.inference.postprocess import clean_masks, to_labelmap
from SpineSegDiffLib.inference.presegmentation import presegment_grid, resolve_start
from SpineSegDiffLib.inference.sample_cache_key import open_sample_cache
from SpineSegDiffLib.inference.sampling import draw_samples
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.inference.summary import structure_summary

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.sample_cache import SampleCache


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
    sample_labelmaps: list[sitk.Image] = field(default_factory=list)  # settings.sample_masks: one per sample


def predict_on_grid(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings,
                    progress: Callable[[float, str], None] | None = None,
                    cache: "SampleCache | None" = None, presegmentation: np.ndarray | None = None,
                    t_max: int | None = None) -> GridPrediction:
    """Run the ensemble over all slices (n, H, W) of a model grid and fuse it.

    With a ``cache``, samples already on disk are read instead of drawn (lowering S
    costs no network evaluation), and only the missing ones are drawn and stored.
    With ``presegmentation`` (n, C, H, W) and ``t_max``, samples start from it (noised).
    """
    fused = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    samples = cache.load_leading(settings.samples) if cache is not None else []
    cached = len(samples)
    drawn = draw_samples(model, slices, settings, range(cached, settings.samples), fused, progress,
                         presegmentation, t_max)
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
    out.sample_levels = samples
    return out


def _decided_probabilities(prob: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Probabilities whose 0.5 level set equals the cleaned masks on the grid.

    Linear interpolation of these onto the input grid, then thresholding at 0.5, keeps
    the clean-up's decisions while giving sub-grid-voxel smooth boundaries.
    """
    eps = 1e-3
    return np.where(keep, np.maximum(prob, 0.5 + eps), np.minimum(prob, 0.5 - eps)).astype(np.float32)


def labelmap_on_input(probabilities: np.ndarray, grid: ModelGrid, image: sitk.Image,
                      min_component_mm3: float) -> tuple[sitk.Image, np.ndarray, np.ndarray, list[sitk.Image]]:
    """Grid probabilities (n, C, H, W) -> (labelmap, masks (C, z, y, x), probabilities (C, z, y, x),
    probability images) on the input's exact geometry, cleaned on the grid."""
    spacing = grid.grid_image.GetSpacing()
    keep = clean_masks(probabilities > 0.5, float(np.prod(spacing)), min_component_mm3)
    decided = _decided_probabilities(probabilities, keep)
    prob_images = [grid.to_input_geometry(decided[:, c], interpolation="linear") for c in range(NUM_CLASSES)]
    prob_arrays = np.stack([sitk.GetArrayViewFromImage(p) for p in prob_images])
    masks = prob_arrays > 0.5
    # to_labelmap wants the structure axis second: (z, C, y, x)
    labelmap_arr = to_labelmap(np.moveaxis(masks, 0, 1), np.moveaxis(prob_arrays, 0, 1))
    # from here on the masks are the labelmap's, so volumes and scores match what is written
    masks = np.stack([labelmap_arr == s.value for s in STRUCTURES])
    labelmap = sitk.GetImageFromArray(labelmap_arr)
    labelmap.CopyInformation(image)
    return labelmap, masks, prob_arrays, prob_images


def segment_image(image: sitk.Image, model: LoadedModel, settings: SegmentSettings,
                  progress: Callable[..., None] | None = None, input_name: str = "",
                  on_presegmentation: Callable[[sitk.Image], None] | None = None) -> SegmentationResult:
    """Segment one validated 3-D MRI; every output lies on `image`'s exact geometry.

    With a presegmenter (start "presegmentation", or ``on_presegmentation`` given), the
    presegmentation is computed first and handed, as a labelmap on the input geometry, to
    ``on_presegmentation`` before the ensemble starts (the first result a user sees).
    """
    settings.validate()
    start = resolve_start(model, settings)
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
        warn(notes[-1])

    preseg_probabilities, preseg_evaluations = None, 0
    if start.kind == "presegmentation" or on_presegmentation is not None:
        t_pre = time.perf_counter()
        report("presegmentation", 0.03, "presegmentation: one network pass per slice")
        preseg_probabilities, timings["presegmentation_network_s"] = presegment_grid(model, grid.slices)
        preseg_evaluations = int(grid.slices.shape[0])
        if on_presegmentation is not None:
            on_presegmentation(labelmap_on_input(preseg_probabilities, grid, image, settings.min_component_mm3)[0])
        timings["presegmentation_s"] = time.perf_counter() - t_pre

    t1 = time.perf_counter()
    fused = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    cache = open_sample_cache(image, grid, model, settings, fused, start) if settings.cache else None
    timings["cache_key_s"] = time.perf_counter() - t1
    pred = predict_on_grid(model, grid.slices, settings,
                           lambda f, msg: report("sample", 0.05 + 0.85 * f, msg), cache=cache,
                           presegmentation=preseg_probabilities if start.kind == "presegmentation" else None,
                           t_max=start.t_max)
    timings["ensemble_s"] = time.perf_counter() - t1
    timings["network_s"] = pred.network_seconds

    t2 = time.perf_counter()
    report("fuse", 0.91, "cleaning masks and mapping back onto the input geometry")
    spacing = grid.grid_image.GetSpacing()
    labelmap, masks, prob_arrays, prob_images = labelmap_on_input(pred.probabilities, grid, image,
                                                                  settings.min_component_mm3)
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
    sample_labelmaps = []
    if settings.sample_masks:
        from SpineSegDiffLib.inference.sample_masks import sample_labelmaps as per_sample

        sample_labelmaps = [grid.to_input_geometry(lm, "nearest") for lm in per_sample(
            pred.sample_levels, fused, float(np.prod(spacing)), settings.min_component_mm3)]
    timings["postprocess_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "version": 1,
        "spinesegdiff_version": __version__,
        "input": input_name,
        "model": model.identity,
        "settings": {"samples": settings.samples, "steps": settings.steps, "fused_steps": fused,
                     "seed": settings.seed, "device": str(model.device),
                     "start": start.kind, "t_max": start.t_max,
                     "grid": {"spacing_mm": list(spacing), "size": model.grid_spec.size,
                              "slices": int(grid.slices.shape[0])},
                     "acquisition_plane": grid.acquisition_plane},
        "notes": notes,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "network_evaluations": pred.network_evaluations,
        # one encoder + head pass per slice (the ensemble's own encoder passes are not counted either)
        "presegmentation_evaluations": preseg_evaluations,
        "cache": {"enabled": cache is not None, "samples_from_cache": pred.samples_from_cache,
                  "samples_computed": settings.samples - pred.samples_from_cache,
                  "folder": str(cache.folder) if cache is not None else None},
        "structures": structure_summary(image, masks, ent_arrays),
    }
    return SegmentationResult(labelmap, masks, combined, ent_images, prob_images, extras, summary, grid,
                              sample_labelmaps)
