"""Fused grid results onto the input's exact geometry: cleaned labelmap, uncertainty, extras, summary.

No network and no torch: the same code finishes a fresh run (``pipeline.py``) and a run
whose samples all come from the sample cache (``cached_run.py``), so both give the same
files. Probabilities are cleaned on the grid, mapped back linearly and thresholded on
the input's grid (smooth boundaries even when the grid is coarser than the input).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.geometry import ModelGrid
from SpineSegDiffLib.inference.fusion import GridPrediction
from SpineSegDiffLib.inference.postprocess import clean_masks, to_labelmap
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.inference.summary import structure_summary


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


def result_on_input(image: sitk.Image, grid: ModelGrid, pred: GridPrediction, settings: SegmentSettings,
                    fused_steps: int) -> tuple[SegmentationResult, np.ndarray]:
    """Everything a run outputs, on the input geometry, plus the per-structure uncertainty
    arrays (C, z, y, x) the summary needs. ``summary`` is left for ``run_summary``."""
    spacing = grid.grid_image.GetSpacing()
    labelmap, masks, _, prob_images = labelmap_on_input(pred.probabilities, grid, image,
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
            pred.sample_levels, fused_steps, float(np.prod(spacing)), settings.min_component_mm3)]
    result = SegmentationResult(labelmap, masks, combined, ent_images, prob_images, extras, {}, grid,
                                sample_labelmaps)
    return result, ent_arrays


def reorientation_notes(grid: ModelGrid) -> list[str]:
    """The note (also printed as a warning) that a non-sagittal input was reoriented; [] for sagittal."""
    if grid.acquisition_plane == "sagittal":
        return []
    note = (f"{grid.acquisition_plane} acquisition reoriented to sagittal slices "
            f"({grid.slices.shape[0]} slices); results are mapped back onto the input grid")
    warn(note)
    return [note]


def run_summary(image: sitk.Image, result: SegmentationResult, ent_arrays: np.ndarray, pred: GridPrediction,
                settings: SegmentSettings, *, fused_steps: int, start_kind: str, t_max: int | None,
                device: str, model_identity: dict, input_name: str, notes: list[str],
                timings: dict[str, float], preseg_evaluations: int, cache_folder: str | None,
                crop: dict | None = None) -> dict:
    """The run's JSON summary (settings, timings, cache use, per-structure volumes and uncertainty)."""
    grid = result.grid
    return {
        "version": 1,
        "spinesegdiff_version": __version__,
        "input": input_name,
        "model": model_identity,
        "settings": {"samples": len(pred.sample_levels) if pred.sample_levels else settings.samples,
                     "steps": settings.steps, "fused_steps": fused_steps,
                     "seed": settings.seed, "device": device,
                     "start": start_kind, "t_max": t_max,
                     "grid": {"spacing_mm": list(grid.grid_image.GetSpacing()), "size": grid.spec.size,
                              "slices": int(grid.slices.shape[0])},
                     "acquisition_plane": grid.acquisition_plane,
                     # what the ensemble sampled: the spine's box and slices (--crop auto), or all
                     "crop": crop or {"setting": settings.crop, "applied": False}},
        "notes": notes,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "network_evaluations": pred.network_evaluations,
        # one encoder + head pass per slice (the ensemble's own encoder passes are not counted either)
        "presegmentation_evaluations": preseg_evaluations,
        "cache": {"enabled": cache_folder is not None, "samples_from_cache": pred.samples_from_cache,
                  "samples_computed": (len(pred.sample_levels) if pred.sample_levels else settings.samples)
                  - pred.samples_from_cache,
                  "folder": cache_folder},
        "structures": structure_summary(image, result.masks, ent_arrays),
    } | ({"samples_auto": {"cap": settings.samples, "trace": pred.auto_trace}} if settings.samples_auto else {})
