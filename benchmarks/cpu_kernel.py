#!/usr/bin/env python
"""bf16 autocast against eager float32 on the CPU: network time and Dice, measured in one run.

    .venv/bin/python benchmarks/cpu_kernel.py --image ../shared/data/real/images/VB2_04.nii.gz \
        --slices 8 --samples 1 --steps 10 --repeats 2

The bundled model on the central ``--slices`` grid slices of a real (or phantom) volume:
the same samples (same noise) drawn with the engine's float32 path and under
``torch.autocast("cpu", torch.bfloat16)``, alternating ``--repeats`` times so both see the
same load; network seconds from ``draw_samples``; Dice per structure of the fused masks
(bf16 vs float32, on the grid). Records the CPU's flags (/proc/cpuinfo) and the load.
Results: results/cpu_kernel-<date>.json. Kept only if faster AND Dice within 0.005.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return {"model": model or platform.processor(), "cores": os.cpu_count(),
            "flags": {f: f in flags for f in FLAGS_OF_INTEREST}}


def main() -> int:
    os.environ["SPINESEGDIFF_CPU_KERNEL"] = "eager"  # the eager PyTorch network is the baseline here
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference import sampling
    from SpineSegDiffLib.inference.fusion import fuse_samples
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.registry import resolve_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results"
                   / f"cpu_kernel-{dt.date.today().isoformat()}.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model(args.model), "cpu")
    grid = to_model_grid(sitk.ReadImage(str(args.image)), model.grid_spec)
    mid = grid.slices.shape[0] // 2
    slices = grid.slices[max(0, mid - args.slices // 2):][:args.slices]
    settings = SegmentSettings(samples=args.samples, steps=args.steps)
    fused = model.diffusion.fused_steps_for(args.steps)
    kernels = {"float32": contextlib.nullcontext,
               "bf16_autocast": lambda device: torch.autocast("cpu", dtype=torch.bfloat16)}
    seconds = {k: [] for k in kernels}
    results = {}
    original = sampling.autocast_context
    load = [os.getloadavg()]
    try:
        for _ in range(args.repeats):
            for name, context in kernels.items():
                sampling.autocast_context = (lambda device, c=context: c(device)) if name != "float32" else original
                drawn = sampling.draw_samples(model, slices, settings, range(args.samples), fused)
                seconds[name].append(drawn.network_seconds / drawn.network_evaluations)
                results[name] = fuse_samples(list(drawn.levels[:args.samples]), fused).probabilities > 0.5
    finally:
        sampling.autocast_context = original
    load.append(os.getloadavg())
    dice = []
    for c in range(results["float32"].shape[1]):
        a, b = results["float32"][:, c], results["bf16_autocast"][:, c]
        total = a.sum() + b.sum()
        dice.append(round(float(2 * (a & b).sum() / total) if total else 1.0, 5))
    per_eval = {k: round(float(np.median(v)), 5) for k, v in seconds.items()}
    record = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_flags(),
              "torch": torch.__version__, "threads": args.threads, "load_average": load,
              "image": args.image.name, "slices": int(slices.shape[0]), "grid": list(slices.shape[1:]),
              "samples": args.samples, "steps": args.steps, "repeats": args.repeats,
              "seconds_per_evaluation": per_eval, "all_seconds_per_evaluation": seconds,
              "bf16_time_ratio": round(per_eval["bf16_autocast"] / per_eval["float32"], 3),
              "dice_bf16_vs_float32": dice,
              "keep_bf16": bool(per_eval["bf16_autocast"] < per_eval["float32"] and min(dice) >= 0.995)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("cpu", "seconds_per_evaluation", "bf16_time_ratio",
                                             "dice_bf16_vs_float32", "keep_bf16", "load_average")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
