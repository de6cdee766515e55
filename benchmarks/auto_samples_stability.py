#!/usr/bin/env python
"""How many samples the fused result and the uncertainty need to be stable, and where
`--samples auto` stops, per case.

    .venv/bin/python benchmarks/auto_samples_stability.py IMAGE [IMAGE ...] --cap 15 --steps 10

For each image: a normal `segment --samples CAP` run (draws what the sample cache lacks),
then, from the cached samples, for S = 1..CAP: the lowest per-structure Dice of the fused
masks against S = CAP, the mean |entropy change| against S = CAP over the unsure band
(the same measures as ``inference/auto_samples.py``), the S where those stay within the
auto thresholds from then on, and the S the auto rule picks. On the model grid.
Results: results/auto_samples_stability-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import SimpleITK as sitk

    from SpineSegDiffLib.core.labels import NUM_CLASSES
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference import auto_samples
    from SpineSegDiffLib.inference.fusion import fuse_samples
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.inference.presegmentation import resolve_start
    from SpineSegDiffLib.inference.request_index import find_request, request_key
    from SpineSegDiffLib.inference.sample_cache import SampleCache, ensembles_dir
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.registry import resolve_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--cap", type=int, default=auto_samples.CAP)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results"
                   / f"auto_samples_stability-{dt.date.today().isoformat()}.json")
    args = p.parse_args()
    info = ModelInfo.read(resolve_model(args.model))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    records = []
    for image_path in args.images:
        work = Path(tempfile.mkdtemp(prefix="auto-stability-"))
        subprocess.run([sys.executable, "-m", "SpineSegDiffLib", "segment", str(image_path), "--model", args.model,
                        "--samples", str(args.cap), "--steps", str(args.steps), "--device", args.device,
                        "--output-summary", str(work / "s.json"), "--progress", "none"],
                       check=True, cwd=REPO, env=env)
        image = sitk.ReadImage(str(image_path))
        settings = SegmentSettings(samples=args.cap, steps=args.steps, cache=True)
        start = resolve_start(info, settings)
        fused = info.diffusion.fused_steps_for(args.steps)
        folder, _ = find_request(ensembles_dir(), request_key(image, info.path, settings, fused, start, args.device))
        grid = to_model_grid(image, info.grid_spec)
        n, h, w = grid.slices.shape
        samples = SampleCache(folder, (fused, n, NUM_CLASSES, h, w), 1 << 40).load_leading(args.cap)
        final = fuse_samples(samples, fused)
        per_s = []
        for s in range(1, args.cap + 1):
            change = auto_samples.change_between(final, fuse_samples(samples[:s], fused))
            per_s.append({"samples": s, "dice_vs_cap": change["dice"],
                          "uncertainty_change_vs_cap": change["uncertainty_change"]})
        stable_from = {}
        for key, ok in (("masks", lambda r: r["dice_vs_cap"] >= auto_samples.DICE_STABLE),
                        ("uncertainty", lambda r: r["uncertainty_change_vs_cap"] <= auto_samples.UNCERTAINTY_STABLE)):
            stable_from[key] = next(r["samples"] for r in per_s if all(ok(q) for q in per_s[r["samples"] - 1:]))
        _, chosen, trace = auto_samples.choose_samples(lambda k: samples[:k], fused, False, args.cap)
        records.append({"image": image_path.name, "grid_slices": n, "per_samples": per_s,
                        "stable_from": stable_from, "auto_chooses": len(chosen), "auto_trace": trace})
        print(json.dumps({k: records[-1][k] for k in ("image", "stable_from", "auto_chooses")}))
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cap": args.cap, "steps": args.steps,
           "thresholds": {"dice": auto_samples.DICE_STABLE, "uncertainty_change": auto_samples.UNCERTAINTY_STABLE,
                          "band": auto_samples.UNCERTAIN_BAND},
           "load_average": os.getloadavg(), "cases": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
