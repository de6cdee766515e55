"""Fused grid results onto the input's exact geometry: cleaned labelmap, uncertainty, extras, summary.

No network and no torch: the same code finishes a fresh run (``pipeline.py``) and a run
whose samples all come from the sample cache (``cached_run.py``), so both give the same
files. Probabilities are cleaned on the grid, mapped back linearly and thresholded on
the input's grid (smooth boundaries even when the grid is coarser than the input); the
uncertainty is their entropy there (``probability_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.labels import NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.geometry import ModelGrid
from SpineSegDiffLib.grid.map_back import (
    BoxedArray,
    LinearMap,
    axis_maps,
    box_reading,
    intersect,
    linear_to_input,
    nonzero_box,
    reading_support,
    slabs_in_box,
    within,
)
from SpineSegDiffLib.inference.fusion import GridPrediction
from SpineSegDiffLib.inference.postprocess import clean_masks, labelmap_of_channels
from SpineSegDiffLib.inference.probability_entropy import most_uncertain, probability_entropy
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.inference.summary import structure_summary


@dataclass
class SegmentationResult:
    labels: np.ndarray  # (z, y, x) uint8 labelmap on the input geometry
    labels_boxed: BoxedArray  # the labelmap's voxels inside the box that can hold a structure (0 outside)
    combined_uncertainty: np.ndarray  # (z, y, x) float32 combined uncertainty on the input geometry
    probability_map: LinearMap  # fused probabilities (C), clean-up decided, on the input's voxels on request
    reference: sitk.Image  # the input: the geometry of every image of the result
    extras: dict[str, list[sitk.Image]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    grid: ModelGrid | None = None
    sample_labelmaps: list[sitk.Image] = field(default_factory=list)  # settings.sample_masks: one per sample
    grid_labels: np.ndarray | None = None  # (n, H, W) uint8: the labelmap on the model grid (the summary's)

    # images and whole-volume views are made only when asked for: the slider's step in
    # Slicer imports the two arrays and pays for nothing else on the input's 10 M+ voxels
    # (a SimpleITK image of them is a fresh copy: about 0.1 s for an 11 M-voxel input)

    @cached_property
    def labelmap(self) -> sitk.Image:
        """uint8 labelmap, the input's geometry."""
        return _image_like(self.labels, self.reference)

    @cached_property
    def uncertainty(self) -> sitk.Image:
        """float32 combined uncertainty, the input's geometry."""
        return _image_like(self.combined_uncertainty, self.reference)

    @cached_property
    def masks(self) -> np.ndarray:
        """(C, z, y, x) bool on the input geometry: the labelmap's structures."""
        return np.stack([self.labels == s.value for s in STRUCTURES])

    @cached_property
    def structure_uncertainty(self) -> list[sitk.Image]:
        """Per structure: the entropy of its probability on the input's voxels (``probability_entropy``)."""
        return [_image_like(probability_entropy(self.probability_map.full(c)), self.reference)
                for c in range(NUM_CLASSES)]

    @cached_property
    def probabilities(self) -> list[sitk.Image]:
        """Per structure fused probabilities, input geometry."""
        return [_image_like(self.probability_map.full(c), self.reference) for c in range(NUM_CLASSES)]


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _decided_probabilities(prob: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Probabilities whose 0.5 level set equals the cleaned masks on the grid.

    Linear interpolation of these onto the input grid, then thresholding at 0.5, keeps
    the clean-up's decisions while giving sub-grid-voxel smooth boundaries.
    """
    eps = 1e-3
    return np.where(keep, np.maximum(prob, 0.5 + eps), np.minimum(prob, 0.5 - eps)).astype(np.float32)


@dataclass
class LabelmapOnInput:
    labelmap: np.ndarray  # (z, y, x) uint8, the input's geometry
    labels: BoxedArray  # the same voxels inside the box that can hold a structure
    probability_map: LinearMap  # the decided probabilities (C) on the input's voxels, on request
    reference: sitk.Image  # the input
    grid_labels: np.ndarray  # (n, H, W) uint8: the same decisions on the model grid
    combined_uncertainty: np.ndarray | None = None  # (z, y, x) float32, when asked for

    def image(self) -> sitk.Image:
        """The labelmap as a uint8 image on the input's geometry (a copy)."""
        return _image_like(self.labelmap, self.reference)


def labelmap_on_input(probabilities: np.ndarray, grid: ModelGrid, image: sitk.Image,
                      min_component_mm3: float, uncertainty: bool = False) -> LabelmapOnInput:
    """Grid probabilities (n, C, H, W) -> the labelmap on the input's exact geometry, cleaned on the grid.

    Only input voxels that read a kept grid voxel can exceed 0.5 (elsewhere every value
    interpolated is at most 0.5 - eps): without ``uncertainty`` the probabilities are mapped
    back in that box only, slab by slab, and never kept. With it, they are mapped back
    wherever they are not 0, in one pass that gives the combined uncertainty (the most
    uncertain structure's entropy, ``probability_entropy``) and, in the box, the labelmap:
    the same values, so the same labels either way.
    """
    spacing = grid.grid_image.GetSpacing()
    keep = clean_masks(probabilities > 0.5, float(np.prod(spacing)), min_component_mm3)
    decided = np.ascontiguousarray(np.moveaxis(_decided_probabilities(probabilities, keep), 1, 0))  # (C, n, H, W)
    maps = axis_maps(grid)
    shape = tuple(reversed(image.GetSize()))
    support = keep.any(axis=1)  # the grid voxels a structure keeps
    grid_box = nonzero_box(support)
    box = box_reading(maps, grid_box) if grid_box is not None else (slice(0, 0),) * 3
    labels = np.zeros(shape, np.uint8)
    probability_map = LinearMap.of(decided, maps, shape)
    combined = None
    if uncertainty:
        combined = np.zeros(shape, np.float32)
        for slab, prob in probability_map.slabs():
            most_uncertain(prob, out=combined[slab])
            # labels only where a voxel can read a kept grid voxel, as ``slabs_in_box(support=...)``
            common = intersect(intersect(reading_support(maps, support, slab[0]), box), slab)
            if common is not None:
                local = prob[(slice(None), *within(common, slab))]
                labels[common] = labelmap_of_channels(local > 0.5, local)
    elif all(b.stop > b.start for b in box):
        for slab, prob in slabs_in_box(decided, maps, box, support=support):
            labels[slab] = labelmap_of_channels(prob > 0.5, prob)
    grid_labels = labelmap_of_channels(np.moveaxis(keep, 1, 0), decided)
    return LabelmapOnInput(labels, BoxedArray(labels[box], box, shape), probability_map, image, grid_labels, combined)


def result_on_input(image: sitk.Image, grid: ModelGrid, pred: GridPrediction, settings: SegmentSettings,
                    fused_steps: int) -> SegmentationResult:
    """Everything a run outputs, on the input geometry. ``summary`` is left for ``run_summary``."""
    spacing = grid.grid_image.GetSpacing()
    on_input = labelmap_on_input(pred.probabilities, grid, image, settings.min_component_mm3, uncertainty=True)
    maps, shape = on_input.probability_map.maps, on_input.probability_map.shape
    extras: dict[str, list[sitk.Image]] = {}
    if settings.extras:
        for name, values in (("variance", pred.variance), ("mutual_information", pred.mutual_information)):
            extras[name] = [_image_like(v, image) for v in linear_to_input(np.moveaxis(values, 1, 0), maps, shape)]
    sample_labelmaps = []
    if settings.sample_masks:
        from SpineSegDiffLib.inference.sample_masks import sample_labelmaps as per_sample

        sample_labelmaps = [grid.to_input_geometry(lm, "nearest") for lm in per_sample(
            pred.sample_levels, fused_steps, float(np.prod(spacing)), settings.min_component_mm3)]
    return SegmentationResult(on_input.labelmap, on_input.labels, on_input.combined_uncertainty,
                              on_input.probability_map, image, extras, {}, grid, sample_labelmaps,
                              on_input.grid_labels)


def reorientation_notes(grid: ModelGrid) -> list[str]:
    """The note (also printed as a warning) that a non-sagittal input was reoriented; [] for sagittal."""
    if grid.acquisition_plane == "sagittal":
        return []
    note = (f"{grid.acquisition_plane} acquisition reoriented to sagittal slices "
            f"({grid.shape[0]} slices); results are mapped back onto the input grid")
    warn(note)
    return [note]


def run_summary(image: sitk.Image, result: SegmentationResult, pred: GridPrediction,
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
                              "slices": int(grid.shape[0])},
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
        "structures": structure_summary(image, result.labels_boxed, grid, result.grid_labels,
                                        result.probability_map.grid_values),
    } | ({"samples_auto": {"cap": settings.samples, "trace": pred.auto_trace}} if settings.samples_auto else {})
