#!/usr/bin/env python
"""Time `segment` on a SPIDER-sized volume against a naive baseline and an
nnU-Net-like 2D pass, all measured in the same run on the same machine.

    .venv/bin/python benchmarks/bench_segment.py                 # CPU: demo widths, quick set
    python benchmarks/bench_segment.py --device cuda --full      # GPU: paper widths too

Every optimisation is reported as a ratio against the naive baseline measured in this
run: one sample and one step at a time, the image encoder recomputed at every call.
Results: benchmarks/results/<machine>-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_network(features, device):
    from SpineSegDiffLib.network import DiffUNet, NetworkConfig

    torch.manual_seed(0)
    return DiffUNet(NetworkConfig(image_channels=1, num_classes=3, features=tuple(features))).to(device).eval()


def naive_time(net, slices: torch.Tensor, samples: int, steps: int, device, limit_calls: int) -> tuple[float, int]:
    """Seconds per network evaluation of the naive loop, measured on `limit_calls` calls."""
    from SpineSegDiffLib.diffusion import DiffusionConfig, make_scheduler, set_sampling_timesteps

    sched = make_scheduler(DiffusionConfig())
    ts = set_sampling_timesteps(sched, steps).tolist()
    calls = 0
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(slices.shape[0]):
            for _ in range(samples):
                x = torch.randn((1, 3, *slices.shape[-2:]), device=device)
                for t in ts:
                    logits = net(slices[i:i + 1], x, torch.tensor([t], device=device))  # encoder every call
                    x, _ = sched.step(2 * torch.sigmoid(logits) - 1, t, x)
                    calls += 1
                    if calls >= limit_calls:
                        sync(device)
                        return (time.perf_counter() - t0) / calls, calls
    sync(device)
    return (time.perf_counter() - t0) / calls, calls


def engine_time(net, features, size, slices_np, samples, steps, device) -> dict:
    """The engine's path: predict_on_grid (batched, encoder once, fused running sums)."""
    from SpineSegDiffLib.diffusion import DiffusionConfig
    from SpineSegDiffLib.geometry import GridSpec
    from SpineSegDiffLib.inference import LoadedModel, SegmentSettings, predict_on_grid

    meta = {"architecture": {"image_channels": 1, "features": list(features)}}
    model = LoadedModel(net, meta, GridSpec(size=size), DiffusionConfig(), device)
    settings = SegmentSettings(samples=samples, steps=steps)
    predict_on_grid(model, slices_np[:1], SegmentSettings(samples=1, steps=1))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    pred = predict_on_grid(model, slices_np, settings)
    sync(device)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "network_s": pred.network_seconds, "evaluations": pred.network_evaluations}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="paper widths at 320² and S in {1,5,15}, K in {10,50}")
    p.add_argument("--slices", type=int, default=18)
    p.add_argument("--naive-calls", type=int, default=40, help="network calls timed for the naive baseline")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    from SpineSegDiffLib.network import PAPER_FEATURES, SMALL_FEATURES

    device = torch.device(args.device)
    configs = []
    widths = [("demo", SMALL_FEATURES, 160)] + ([("paper", PAPER_FEATURES, 320)] if args.full else [])
    grid = [(8, 10)] + ([(1, 10), (5, 10), (15, 10), (15, 50)] if args.full else [(15, 10)])
    records = []
    for name, feats, size in widths:
        net = make_network(feats, device)
        rng = np.random.default_rng(0)
        slices_np = rng.random((args.slices, size, size), dtype=np.float32)
        per_call, n = naive_time(net, torch.from_numpy(slices_np).to(device)[:, None], 1, 10, device, args.naive_calls)
        for samples, steps in grid:
            if device.type == "cpu" and name == "paper" and samples * steps > 150:
                continue  # hours on a CPU; the README says so
            r = engine_time(net, feats, size, slices_np, samples, steps, device)
            naive_total = per_call * samples * steps * args.slices
            rec = {"widths": name, "features": list(feats), "size": size, "slices": args.slices,
                   "samples": samples, "steps": steps, "device": str(device),
                   "wall_s": round(r["wall_s"], 3), "network_s": round(r["network_s"], 3),
                   "evaluations": r["evaluations"],
                   "evaluations_per_s": round(r["evaluations"] / r["wall_s"], 1),
                   "overhead_share": round(max(0.0, r["wall_s"] - r["network_s"]) / r["wall_s"], 4),
                   "naive_s_per_evaluation": round(per_call, 5), "naive_estimated_s": round(naive_total, 2),
                   "speedup_vs_naive": round(naive_total / r["wall_s"], 2),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            if device.type == "cuda":
                rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
                rec["gpu"] = torch.cuda.get_device_name(device)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    tag = f"{device.type}-{platform.node()[:20]}-{stamp}"
    (args.out / f"{tag}.json").write_text(json.dumps(records, indent=2) + "\n")
    lines = ["| widths | size | S | K | wall s | evals/s | overhead | × naive |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['widths']} | {r['size']} | {r['samples']} | {r['steps']} | {r['wall_s']} | "
              f"{r['evaluations_per_s']} | {r['overhead_share']:.1%} | {r['speedup_vs_naive']} |" for r in records]
    (args.out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
