"""`segment` when every sample asked for is already in the sample cache: no network, no torch.

This is the sample slider's step in Slicer (lowering S, or going back to an S drawn
before): the request's ensemble is found by ``request_index``, the first S samples
are read and fused with numpy (``fusion.py``), and the result is finished by the same
code as a fresh run (``on_input.py``), so the files are the same as the full path's.
Anything this path cannot serve (no remembered request, fewer samples on disk than
asked, an unreadable sample) returns None and the caller runs the normal pipeline.
"""

from __future__ import annotations

import time

import SimpleITK as sitk

from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.grid.geometry import to_model_grid
from SpineSegDiffLib.inference.auto_samples import choose_samples
from SpineSegDiffLib.inference.fusion import fuse_samples
from SpineSegDiffLib.inference.model_info import ModelInfo
from SpineSegDiffLib.inference.on_input import (
    SegmentationResult,
    reorientation_notes,
    result_on_input,
    run_summary,
)
from SpineSegDiffLib.inference.presegmentation import resolve_start
from SpineSegDiffLib.inference.request_index import find_request, request_key
from SpineSegDiffLib.inference.settings import SegmentSettings


def segment_from_cache(image: sitk.Image, model: ModelInfo, settings: SegmentSettings, requested_device: str,
                       input_name: str = "") -> SegmentationResult | None:
    """The result of ``pipeline.segment_image`` from cached samples only, or None (run the pipeline)."""
    from SpineSegDiffLib.inference.sample_cache import SampleCache, ensembles_dir, limit_bytes_from_env

    settings.validate()
    if not settings.cache:
        return None
    t0 = time.perf_counter()
    start = resolve_start(model, settings)
    fused = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    key = request_key(image, model.path, settings, fused, start, requested_device)
    found = find_request(settings.cache_dir or ensembles_dir(), key)
    if found is None:
        return None
    folder, record = found
    timings = {"cache_key_s": time.perf_counter() - t0}
    t_grid = time.perf_counter()
    grid = to_model_grid(image, model.grid_spec, intensities=False)  # geometry: the samples are on disk
    timings["grid_s"] = time.perf_counter() - t_grid
    n, h, w = grid.shape
    cache = SampleCache(folder, (fused, n, NUM_CLASSES, h, w), limit_bytes_from_env())
    t_fuse = time.perf_counter()
    on_disk = cache.load_leading(settings.samples)
    if settings.samples_auto:  # the same rule as a fresh run, on the samples on disk
        chosen = choose_samples(lambda k: on_disk[:k] if len(on_disk) >= k else None, fused, settings.extras,
                                settings.samples)
        if chosen is None:
            return None
        pred, samples, pred.auto_trace = chosen
    elif len(on_disk) < settings.samples:
        return None  # the pipeline draws the missing ones (and stores them)
    else:
        samples = on_disk
        pred = fuse_samples(samples, fused, settings.extras, entropy=False)  # only samples_auto reads it
    cache.touch()
    pred.samples_from_cache = len(samples)
    pred.sample_levels = samples
    timings["ensemble_s"] = time.perf_counter() - t_fuse
    timings["network_s"] = 0.0
    t_post = time.perf_counter()
    result = result_on_input(image, grid, pred, settings, fused)
    timings["postprocess_s"] = time.perf_counter() - t_post
    timings["total_s"] = time.perf_counter() - t0
    notes = reorientation_notes(grid)
    result.summary = run_summary(image, result, pred, settings, fused_steps=fused,
                                 start_kind=start.kind, t_max=start.t_max, device=record["device"],
                                 model_identity=model.identity, input_name=input_name, notes=notes,
                                 timings=timings, preseg_evaluations=0, cache_folder=str(folder),
                                 crop=record.get("crop"))
    result.summary["cache"]["torch_free"] = True  # says which path served the run
    return result
