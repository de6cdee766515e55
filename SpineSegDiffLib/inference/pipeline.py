"""Segment a volume: model grid, ensemble sampling, fusion, clean-up, outputs.

The pipeline: bring the MRI onto the model grid (sagittal slices), with ``--crop
slices|auto`` keep only the spine's slices / box found by the presegmentation
(``cropping.py``), run the DDIM
ensemble on batches of slices (the image encoder runs once per slice), fuse the
last steps, clean the masks on the grid, then map probabilities and uncertainty
back onto the input's exact geometry and threshold there (smooth boundaries even
when the grid is coarser than the input).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.inference.auto_samples import choose_samples
from SpineSegDiffLib.grid.crop import CropBox
from SpineSegDiffLib.grid.geometry import to_model_grid
from SpineSegDiffLib.inference.cropping import choose_crop, wants_crop
from SpineSegDiffLib.inference.fusion import GridPrediction, fuse_samples
from SpineSegDiffLib.inference.loading import LoadedModel
from SpineSegDiffLib.inference.on_input import (  # noqa: F401 (SegmentationResult: callers import it from here)
    SegmentationResult,
    labelmap_on_input,
    reorientation_notes,
    result_on_input,
    run_summary,
)
from SpineSegDiffLib.inference.presegmentation import presegment_grid, resolve_start
from SpineSegDiffLib.inference.sample_cache_key import open_sample_cache
from SpineSegDiffLib.inference.sampling import draw_samples
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.inference.request_index import remember_request

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.sample_cache import SampleCache


class _Samples:
    """Samples 0..k-1 on demand: the ones held, then the cache, then drawn (and stored)."""

    def __init__(self, model: LoadedModel, slices: np.ndarray, settings: SegmentSettings, fused: int,
                 progress, cache: "SampleCache | None", presegmentation, t_max, box: CropBox | None) -> None:
        self.model, self.slices, self.settings, self.fused = model, slices, settings, fused
        self.progress, self.cache, self.presegmentation, self.t_max = progress, cache, presegmentation, t_max
        self.box = box
        self.held: list[np.ndarray] = []
        self.from_cache = 0
        self.network_seconds = 0.0
        self.network_evaluations = 0

    def first(self, k: int) -> list[np.ndarray]:
        if len(self.held) < k and self.cache is not None:
            # samples drawn by this run are held already: what the cache adds came from earlier runs
            found = self.cache.load_leading(k)[len(self.held):]
            self.held += found
            self.from_cache += len(found)
        if len(self.held) < k:
            have = len(self.held)
            drawn = draw_samples(self.model, self.slices, self.settings, range(have, k), self.fused,
                                 self.progress, self.presegmentation, self.t_max, self.box)
            for offset, levels in enumerate(drawn.levels):
                index = drawn.first + offset
                if self.cache is not None and index >= have:  # whole groups: keep the extra ones for later
                    self.cache.store(index, levels)
                if index == len(self.held):
                    self.held.append(levels)
            self.network_seconds += drawn.network_seconds
            self.network_evaluations += drawn.network_evaluations
        return self.held[:k]


def predict_on_grid(model: LoadedModel, slices: np.ndarray, settings: SegmentSettings,
                    progress: Callable[[float, str], None] | None = None,
                    cache: "SampleCache | None" = None, presegmentation: np.ndarray | None = None,
                    t_max: int | None = None, box: CropBox | None = None) -> GridPrediction:
    """Run the ensemble over all slices (n, H, W) of a model grid and fuse it.

    With a ``cache``, samples already on disk are read instead of drawn (lowering S
    costs no network evaluation), and only the missing ones are drawn and stored.
    With ``presegmentation`` (n, C, H, W) and ``t_max``, samples start from it (noised).
    With ``settings.samples_auto``, S grows until the result is stable (``auto_samples``),
    ``settings.samples`` being the cap; ``out.auto_trace`` then says how it went.
    With a ``box``, only its slices and pixels are sampled (background, uncertainty 0 outside).
    """
    fused = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    source = _Samples(model, slices, settings, fused, progress, cache, presegmentation, t_max, box)
    trace = None
    if settings.samples_auto:
        out, samples, trace = choose_samples(source.first, fused, settings.extras, settings.samples)
    else:
        samples = source.first(settings.samples)
        out = fuse_samples(samples, fused, settings.extras)
    out.network_seconds = source.network_seconds
    out.network_evaluations = source.network_evaluations
    out.samples_from_cache = min(source.from_cache, len(samples))
    out.sample_levels = samples
    out.auto_trace = trace
    return out


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
    notes = ([model.device_note] if model.device_note else []) + reorientation_notes(grid)  # device: said at load

    preseg_probabilities, preseg_evaluations = None, 0
    if start.kind == "presegmentation" or on_presegmentation is not None or wants_crop(model, settings):
        t_pre = time.perf_counter()
        report("presegmentation", 0.03, "presegmentation: one network pass per slice")
        preseg_probabilities, timings["presegmentation_network_s"] = presegment_grid(model, grid.slices)
        preseg_evaluations = int(grid.slices.shape[0])
        if on_presegmentation is not None:
            on_presegmentation(labelmap_on_input(preseg_probabilities, grid, image,
                                                 settings.min_component_mm3).image())
        timings["presegmentation_s"] = time.perf_counter() - t_pre

    box, crop_record, crop_notes = choose_crop(model, settings, grid, preseg_probabilities)
    notes += crop_notes
    t1 = time.perf_counter()
    fused = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    cache = open_sample_cache(image, grid, model, settings, fused, start, box) if settings.cache else None
    timings["cache_key_s"] = time.perf_counter() - t1
    pred = predict_on_grid(model, grid.slices, settings,
                           lambda f, msg: report("sample", 0.05 + 0.85 * f, msg), cache=cache,
                           presegmentation=preseg_probabilities if start.kind == "presegmentation" else None,
                           t_max=start.t_max, box=box)
    timings["ensemble_s"] = time.perf_counter() - t1
    timings["network_s"] = pred.network_seconds

    t2 = time.perf_counter()
    report("fuse", 0.91, "cleaning masks and mapping back onto the input geometry")
    result = result_on_input(image, grid, pred, settings, fused)
    timings["postprocess_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    result.summary = run_summary(image, result, pred, settings, fused_steps=fused,
                                 start_kind=start.kind, t_max=start.t_max, device=str(model.device),
                                 model_identity=model.identity, input_name=input_name, notes=notes,
                                 timings=timings, preseg_evaluations=preseg_evaluations,
                                 cache_folder=str(cache.folder) if cache is not None else None,
                                 crop=crop_record)
    if cache is not None:
        remember_request(cache, image, model.path, settings, fused, start, str(model.device),
                         model.requested_device, crop=crop_record)
    return result
