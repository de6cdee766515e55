#!/usr/bin/env python
"""Dice on unseen phantoms at the default sampling settings vs the paper's (S=15, K=50).

    .venv/bin/python benchmarks/dice_vs_settings.py [--volumes 2]

Issue 5 asks that the default settings lose at most 0.01 Dice against the paper's; this
measures it for the bundled demo model on T2 phantoms of a seed it never saw (1001).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=BUNDLED_DEMO_MODEL)
    p.add_argument("--volumes", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.evaluation.metrics import dice
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.core.labels import STRUCTURES
    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic

    model = load_model(args.model, args.device)
    cases = []
    for i in range(args.volumes):
        c = generate_case(seed=1001, index=i, sequences=("t2",))
        cases.append((c.images["t2"], spider_to_semantic(sitk.GetArrayFromImage(c.mask))))
    out = {"model": model.identity, "device": str(model.device), "volumes": args.volumes, "settings": {}}
    for samples, steps in ((5, 10), (15, 10), (15, 50)):
        t0 = time.perf_counter()
        scores = []
        for image, ref in cases:
            r = segment_image(image, model, SegmentSettings(samples=samples, steps=steps, cache=False))
            scores.append([dice(r.masks[s.value - 1], ref == s.value) for s in STRUCTURES])
        mean = np.mean(scores, axis=0)
        out["settings"][f"S{samples}_K{steps}"] = {
            "dice": {s.key: round(float(v), 4) for s, v in zip(STRUCTURES, mean)},
            "seconds": round(time.perf_counter() - t0, 1)}
        print(f"S={samples} K={steps}: " + json.dumps(out["settings"][f"S{samples}_K{steps}"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"dice_vs_settings-{model.device.type}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
