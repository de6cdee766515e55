"""Opening the disk cache entry of an input, model and setting (what identifies a sample)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import SimpleITK as sitk

from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.geometry import ModelGrid
from SpineSegDiffLib.inference.batching import batch_plan
from SpineSegDiffLib.inference.loading import LoadedModel
from SpineSegDiffLib.inference.settings import SegmentSettings
from SpineSegDiffLib.model.devices import autocast_dtype

if TYPE_CHECKING:
    from SpineSegDiffLib.grid.crop import CropBox
    from SpineSegDiffLib.inference.presegmentation import SamplingStart
    from SpineSegDiffLib.inference.sample_cache import SampleCache



def open_sample_cache(image: sitk.Image, grid: ModelGrid, model: LoadedModel, settings: SegmentSettings,
                      fused_steps: int, start: "SamplingStart | None" = None,
                      box: "CropBox | None" = None) -> "SampleCache | None":
    """The disk cache entry for this input, model and setting; None if it cannot be used.

    Samples stay full-size on disk (0 outside a crop ``box``), so the torch-free path reads
    them as any other; the box is part of the key, so a crop never mixes with another."""
    from dataclasses import asdict

    from SpineSegDiffLib.inference.sample_cache import SampleCache, ensemble_key
    from SpineSegDiffLib.core.hashing import sha256_file

    if model.path is None or not model.path.is_file():
        return None  # no file to identify the weights by: never risk a wrong hit
    sampled = box.shape if box is not None else grid.slices.shape
    parts = {"model_sha256": sha256_file(model.path), "steps": settings.steps, "fused_steps": fused_steps,
             "seed": settings.seed, "grid": asdict(model.grid_spec), "image_channels": model.image_channels,
             "diffusion": model.diffusion.to_dict(),
             # what changes the floats of a sample: the device, its precision, the sample group
             # (slices per call is left out: it moves a level in a handful of voxels at most)
             "device": model.device.type, "autocast": str(autocast_dtype(model.device)),
             "samples_per_call": batch_plan(model, sampled[0], max(sampled[1:]),  # as draw_samples plans
                                            settings.batch_slices, settings.samples_per_call)[1],
             "geometry": [image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection()]}
    if getattr(model, "kernel", "eager") != "eager":  # eager keys stay those of earlier versions
        parts["kernel"] = model.kernel
    if start is not None and start.kind != "noise":
        # only then: noise-start keys stay those of earlier versions, so their caches still hit
        parts.update(start=start.kind, t_max=start.t_max)
    if box is not None:  # likewise: uncropped keys stay those of earlier versions
        parts["crop"] = box.to_dict()
    key = ensemble_key(parts, [sitk.GetArrayViewFromImage(image), grid.slices])
    n, h, w = grid.slices.shape
    try:
        return SampleCache.open(key, (fused_steps, n, NUM_CLASSES, h, w), root=settings.cache_dir,
                                description={"model": model.identity, "steps": settings.steps,
                                             "fused_steps": fused_steps, "seed": settings.seed})
    except OSError as exc:  # an unwritable cache folder must not stop a segmentation
        warn(f"sample cache unavailable ({exc}); continuing without it")
        return None
