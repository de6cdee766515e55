#!/usr/bin/env python
"""Fill the sample cache of one `segment` request with samples synthesized from a reference mask.

Timing only (the slider's step, ``slider_step.py``): drawing 15 real samples of an
11 M-voxel case costs tens of CPU minutes on this machine, and the step's cost does not
depend on what the samples say, only on their shape and on how much of the volume they
cover. Each structure's probability is the reference region (vertebrae: the labelled
bodies; discs: the gaps between them; canal: a tube behind them), blurred, plus smooth
per-sample, per-step noise, so the boundaries are uncertain as real samples' are.

    SPINESEGDIFF_CACHE=/tmp/sp/models .venv/bin/python benchmarks/synthetic_cache.py \
        --image ../shared/data/real/images/VB2_04.nii.gz --mask ../shared/data/real/masks/VB2_04.nii.gz \
        --samples 15 --steps 10

The request (model, steps, seed, device "auto") is the one `segment IMAGE --samples S
--steps K` sends, so that command is then served from these samples without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(values.astype(np.float32)), sigma)
    return sitk.GetArrayFromImage(image)


def structure_regions(labels: np.ndarray) -> np.ndarray:
    """(C, n, H, W) float32 in [0, 1]: canal, vertebrae, discs from a body-only labelmap on the grid."""
    bodies = labels > 0
    rows = np.flatnonzero(bodies.any(axis=(0, 2)))
    discs = np.zeros_like(bodies)
    for n in range(bodies.shape[0]):  # per slice: between two bodies in the same column = disc
        column_has = np.maximum.accumulate(bodies[n], axis=0) & np.maximum.accumulate(bodies[n][::-1], axis=0)[::-1]
        discs[n] = column_has & ~bodies[n]
    canal = np.zeros_like(bodies)
    if rows.size:
        posterior = np.roll(bodies, 12, axis=2) & ~bodies  # a tube about 2 cm behind the bodies
        canal = posterior & (np.abs(np.arange(bodies.shape[0]) - bodies.shape[0] / 2) < 6)[:, None, None]
    return np.stack([canal, bodies, discs]).astype(np.float32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--mask", type=Path, required=True)
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--samples", type=int, default=15)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from SpineSegDiffLib.core.labels import NUM_CLASSES
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.inference.presegmentation import default_start, resolve_start
    from SpineSegDiffLib.inference.request_index import remember_request
    from SpineSegDiffLib.inference.sample_cache import SampleCache
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.levels import QUANT_LEVELS
    from SpineSegDiffLib.model.registry import resolve_model

    image = sitk.ReadImage(str(args.image))
    info = ModelInfo.read(resolve_model(args.model))
    settings = SegmentSettings(samples=args.samples, steps=args.steps, seed=args.seed, cache=True,
                               start=default_start(info))
    start = resolve_start(info, settings)
    fused = info.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    grid = to_model_grid(image, info.grid_spec)
    mask = sitk.ReadImage(str(args.mask))
    labels = grid.labels_to_grid(sitk.Cast(mask, sitk.sitkUInt8))
    regions = np.stack([_smooth(r, 1.0) for r in structure_regions(labels)], axis=1)  # (n, C, H, W)
    rng = np.random.default_rng(args.seed)
    n, h, w = grid.slices.shape
    cache = SampleCache.open(f"synthetic-{args.image.name.split('.')[0]}-{args.steps}", (fused, n, NUM_CLASSES, h, w),
                             description={"synthetic": True, "from": str(args.mask)})
    for s in range(args.samples):
        steps = []
        for _ in range(fused):
            noise = _smooth(rng.normal(0, 1, (n * NUM_CLASSES, h, w)), 2.0).reshape(n, NUM_CLASSES, h, w)
            logit = 8.0 * (regions - 0.5) + 6.0 * noise
            steps.append(np.round(QUANT_LEVELS / (1.0 + np.exp(-logit))).astype(np.uint8))
        if not cache.store(s, np.stack(steps)):
            raise SystemExit("the cache's size limit refused a sample: raise SPINESEGDIFF_CACHE_LIMIT_MB")
    remember_request(cache, image, info.path, settings, fused, start, "cpu", "auto")
    print(json.dumps({"folder": str(cache.folder), "samples": args.samples, "shape": list(cache.shape)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
