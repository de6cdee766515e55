#!/usr/bin/env python
"""Time `segment` on a SPIDER-sized volume against a naive baseline and an
nnU-Net-like 2D pass, all measured in the same run on the same machine.

    .venv/bin/python benchmarks/bench_segment.py                 # CPU: demo widths measured, paper estimated
    python benchmarks/bench_segment.py --device cuda --full      # GPU: every configuration measured

The volume: 18 sagittal slices (3.3 mm) of 512 x 512 (0.6 mm), resampled by the engine
onto the model grid: 160² at the demo widths (SMALL_FEATURES, the demo model's grid),
320² at the paper widths. Weights are random (timing only). Every configuration runs
`segment_image` end to end (grid, ensemble, fusion, uncertainty, clean-up, mapping back)
plus writing the outputs; "overhead" is all of that which is not network time.

Baselines, in the same run: the naive loop (one sample and one step at a time, the image
encoder recomputed at every call; its time per evaluation x the evaluations) and the
nnU-Net peer (an nnU-Net-v2 PlainConvUNet as planned for 2D 320² slices, 7 stages,
32..512 features, over all slices one at a time with 4-flip mirroring). The peer needs
`pip install --no-deps dynamic-network-architectures==0.4.4` (see requirements.txt).

On a CPU, configurations with more than --max-evaluations network evaluations are not
run: their time is the measured seconds per evaluation x evaluations + the measured
overhead, and the record says "estimated": true.

Results: benchmarks/results/<device>-<host>-<date>.json (one record per configuration,
with speedup_vs_naive and x_nnunet) and .md (a table), plus the targets of issue 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

PEER_INSTALL = "pip install --no-deps dynamic-network-architectures==0.4.4"
WIDTHS = {"demo": ("SMALL_FEATURES", 160, 2.0), "paper": ("PAPER_FEATURES", 320, 1.0)}  # features, grid, mm


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def spider_sized_volume(slices: int = 18, size: int = 512, seed: int = 0) -> sitk.Image:
    """A sagittal MRI-like volume: smooth structures plus noise, LPS, x = left-right."""
    rng = np.random.default_rng(seed)
    z, y = np.mgrid[0:size, 0:size].astype(np.float32) / size
    plane = 200 * np.exp(-((y - 0.5) ** 2) / 0.02) + 150 * (np.sin(z * 40) > 0.3) * (np.abs(y - 0.4) < 0.1)
    vol = np.stack([plane * (0.6 + 0.4 * np.cos(i / slices * np.pi)) for i in range(slices)], axis=-1)
    vol = vol + rng.normal(0, 10, vol.shape).astype(np.float32) + 100
    image = sitk.GetImageFromArray(vol.astype(np.float32))  # array (z, y, x): x = slices
    image.SetSpacing((3.3, 0.6, 0.6))
    return image


def write_random_model(path: Path, widths: str, device: torch.device) -> Path:
    """A model file with random weights at the given widths (timing only)."""
    from SpineSegDiffLib.model import network
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.modelfile import save_model
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig
    from SpineSegDiffLib.training.config import TrainConfig
    from SpineSegDiffLib.training.model_record import model_metadata

    features_name, size, spacing = WIDTHS[widths]
    cfg = TrainConfig(features=widths if widths == "paper" else "small", grid_size=size, grid_spacing_mm=spacing,
                      min_slice_spacing_mm=2.0, model_id=f"bench-{widths}")
    net_cfg = NetworkConfig(features=getattr(network, features_name))
    torch.manual_seed(0)
    net = DiffUNet(net_cfg)
    meta = model_metadata(cfg, net_cfg, DiffusionConfig(), {}, [], 0.0, device, {}, False, [], [])
    save_model(path, net.state_dict(), meta)
    return path


def naive_seconds_per_evaluation(model, slices: np.ndarray, steps: int, calls: int) -> float:
    """The naive loop: batch 1, one sample, one step per call, encoder at every call."""
    from SpineSegDiffLib.model.diffusion import make_scheduler, set_sampling_timesteps

    device = model.device
    net = getattr(model.network, "network", model.network)  # the PyTorch module, also behind ONNX Runtime
    sched = make_scheduler(model.diffusion)
    ts = set_sampling_timesteps(sched, steps).tolist()
    channels = net.config.image_channels  # 3 for a 2.5D model: the slice repeated stands in for its neighbours
    image = torch.from_numpy(slices[:, None]).repeat(1, channels, 1, 1).to(device)
    done = 0
    with torch.inference_mode():
        net(image[:1], torch.randn((1, 3, *slices.shape[-2:]), device=device), ts[0])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        while done < calls:
            i = done % slices.shape[0]
            x = torch.randn((1, 3, *slices.shape[-2:]), device=device)
            for t in ts:
                logits = net(image[i:i + 1], x, torch.tensor([t], device=device))  # encoder every call
                x, _ = sched.step(2 * torch.sigmoid(logits) - 1, t, x)
                done += 1
                if done >= calls:
                    break
        sync(device)
    return (time.perf_counter() - t0) / done


def run_segment(image: sitk.Image, model, samples: int, steps: int, out_dir: Path,
                cache_dir: Path | None = None) -> dict:
    """segment_image end to end plus writing labelmap and uncertainty; timings in seconds."""
    from SpineSegDiffLib.data import outputs
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    settings = SegmentSettings(samples=samples, steps=steps, cache=cache_dir is not None, cache_dir=cache_dir)
    sync(model.device)
    t0 = time.perf_counter()
    result = segment_image(image, model, settings)
    outputs.write_segmentation(result.labelmap, out_dir / "seg.nii.gz")
    outputs.write_float_image(result.uncertainty, out_dir / "unc.nii.gz")
    sync(model.device)
    wall = time.perf_counter() - t0
    s = result.summary
    return {"wall_s": wall, "network_s": s["timings"]["network_s"], "evaluations": s["network_evaluations"],
            "samples_from_cache": s["cache"]["samples_from_cache"], "timings": s["timings"]}


def nnunet_peer_seconds(slices: int, size: int, device: torch.device, time_slices: int) -> float | None:
    """nnU-Net v2 2D PlainConvUNet at size², all slices one by one, 4 mirrorings each."""
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        print(f"nnU-Net peer skipped: dynamic-network-architectures is missing; install it with\n    {PEER_INSTALL}",
              file=sys.stderr)
        return None
    nn = torch.nn
    torch.manual_seed(0)
    net = PlainConvUNet(input_channels=1, n_stages=7, features_per_stage=[32, 64, 128, 256, 512, 512, 512],
                        conv_op=nn.Conv2d, kernel_sizes=3, strides=[1, 2, 2, 2, 2, 2, 2], n_conv_per_stage=2,
                        num_classes=4, n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm2d,
                        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                        nonlin_kwargs={"inplace": True}).to(device).eval()
    volume = torch.rand(slices, 1, size, size, device=device)
    from SpineSegDiffLib.model.devices import autocast_context

    with torch.inference_mode(), autocast_context(device):
        net(volume[:1])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for i in range(min(time_slices, slices)):
            x = volume[i:i + 1]
            logits = net(x)
            for dims in ((2,), (3,), (2, 3)):  # nnU-Net's mirroring of 2D patches
                logits = logits + torch.flip(net(torch.flip(x, dims)), dims)
            torch.softmax(logits / 4, 1).argmax(1)
        sync(device)
    return (time.perf_counter() - t0) / min(time_slices, slices) * slices


def peak_memory_subprocess(model_path: Path, tmp: Path, samples: int, steps: int, device: str) -> dict:
    """Peak resident memory of a fresh `spinesegdiff segment` on a 20 x 512 x 512 input."""
    image_path = tmp / "big.nii.gz"
    sitk.WriteImage(spider_sized_volume(20, 512, seed=1), str(image_path))
    code = ("import resource, sys; from SpineSegDiffLib.cli.entry import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "segment", str(image_path), "--model", str(model_path),
           "--samples", str(samples), "--steps", str(steps), "--output-segmentation", str(tmp / "big_seg.nii.gz"),
           "--output-uncertainty", str(tmp / "big_unc.nii.gz"), "--progress", "none", "--no-cache",
           "--device", device]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    rss = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("MAXRSS")]
    return {"input": "20 x 512 x 512", "samples": samples, "steps": steps, "returncode": r.returncode,
            "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(rss[0] / 1024, 1) if rss else None, "stderr_tail": r.stderr[-300:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="paper widths measured too (GPU), all S and K")
    p.add_argument("--slices", type=int, default=18)
    p.add_argument("--naive-calls", type=int, default=40, help="network calls timed for the naive baseline")
    p.add_argument("--max-evaluations", type=int, default=None,
                   help="configurations with more evaluations are estimated (default: 1500 on CPU, no limit on GPU)")
    p.add_argument("--peer-slices", type=int, default=None, help="slices timed for the nnU-Net peer (default: all; "
                                                                 "fewer are extrapolated)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-targets", action="store_true", help="skip the cache and memory target checks")
    p.add_argument("--model", type=Path, default=None,
                   help="a trained model file for the demo widths instead of random weights (random outputs "
                        "make the clean-up and mapping back cost more than a real model's); paper widths skipped")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    from SpineSegDiffLib.inference.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    max_evals = args.max_evaluations if args.max_evaluations is not None else (1500 if on_cpu else 10 ** 9)
    grid = [(s, k) for k in (10, 50) for s in (1, 5, 8, 15)]
    machine = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(machine), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="spinesegdiff-bench-"))
    image = spider_sized_volume(args.slices)
    records, targets = [], {}

    peer_s = nnunet_peer_seconds(args.slices, 320, device, args.peer_slices or args.slices)
    print(json.dumps({"nnunet_peer_s": peer_s}), flush=True)

    for widths in ["demo"] if args.model else ["demo", "paper"]:
        path = args.model if args.model else write_random_model(tmp / f"{widths}.zip", widths, device)
        model = load_model(path, str(device))
        size = WIDTHS[widths][1]
        slices_np = np.random.default_rng(0).random((args.slices, size, size), dtype=np.float32)
        naive = naive_seconds_per_evaluation(model, slices_np, 10, args.naive_calls if widths == "demo" or not on_cpu
                                             else max(3, args.naive_calls // 10))
        run_segment(image, model, 1, 1, tmp)  # warm-up: first calls pay allocation and kernel selection
        measured: dict[tuple[int, int], dict] = {}
        estimate_only = on_cpu and widths == "paper" and not args.full
        if estimate_only:  # a few evaluations, then extrapolate (two points: encoder + per step)
            measured[(1, 1)] = run_segment(image, model, 1, 1, tmp)
            measured[(1, 2)] = run_segment(image, model, 1, 2, tmp)
        for samples, steps in grid:
            evals = samples * steps * args.slices
            if estimate_only or evals > max_evals:
                continue
            measured[(samples, steps)] = run_segment(image, model, samples, steps, tmp)
            print(json.dumps({"widths": widths, "samples": samples, "steps": steps,
                              **{k: round(v, 3) for k, v in measured[(samples, steps)].items()
                                 if isinstance(v, float)}}), flush=True)
        # estimates: network_s = fixed (encoder, once per slice) + per_eval x evaluations, a
        # least-squares line through the measured runs; overhead from the run with most samples
        points = np.array([(r["evaluations"], r["network_s"]) for r in measured.values()])
        per_eval, fixed = (np.polyfit(points[:, 0], points[:, 1], 1) if len(points) > 1
                           else (points[0, 1] / points[0, 0], 0.0))
        fixed = max(float(fixed), 0.0)
        ref = max(measured.values(), key=lambda r: (r["evaluations"] // args.slices, r["wall_s"]))
        overhead = max(ref["wall_s"] - ref["network_s"], 0.0)
        for samples, steps in grid:
            evals = samples * steps * args.slices
            r = measured.get((samples, steps))
            if r is None:
                network_s = fixed + per_eval * evals
                r = {"wall_s": network_s + overhead, "network_s": network_s, "evaluations": evals}
            naive_total = naive * evals
            rec = {"widths": widths, "features": list(model.metadata["architecture"]["features"]), "size": size,
                   "slices": args.slices, "samples": samples, "steps": steps, "device": str(device),
                   "estimated": (samples, steps) not in measured,
                   "wall_s": round(r["wall_s"], 3), "network_s": round(r["network_s"], 3),
                   "evaluations": r["evaluations"],
                   "evaluations_per_s": round(r["evaluations"] / r["wall_s"], 2),
                   "overhead_share": round(max(0.0, r["wall_s"] - r["network_s"]) / r["wall_s"], 4),
                   "naive_s_per_evaluation": round(naive, 5), "naive_estimated_s": round(naive_total, 2),
                   "speedup_vs_naive": round(naive_total / r["wall_s"], 2),
                   "x_nnunet": round(r["wall_s"] / peer_s, 2) if peer_s else None,
                   "nnunet_peer_s": round(peer_s, 3) if peer_s else None,
                   "peak_rss_mb_so_far": peak_rss_mb(), "load_average": [round(v, 2) for v in os.getloadavg()]}
            if device.type == "cuda":
                rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
                rec["gpu"] = torch.cuda.get_device_name(device)
            records.append(rec)
        if widths == "demo" and not args.no_targets:
            targets.update(cache_targets(image, model, tmp))
            targets["peak_memory"] = peak_memory_subprocess(tmp / "demo.zip", tmp, 15, 2, str(device))
            print(json.dumps(targets), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    tag = f"{device.type}-{platform.node()[:20]}-{stamp}"
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    from SpineSegDiffLib.core.atomic import write_text

    write_text(args.out / f"{tag}.json", json.dumps({"machine": machine, "nnunet_peer_s": peer_s,
                                                      "records": records, "targets": targets}, indent=2) + "\n")
    table = markdown_table(records, machine, peer_s, targets)
    write_text(args.out / f"{tag}.md", table)
    print(table)
    return 0


def cache_targets(image: sitk.Image, model, tmp: Path) -> dict:
    """The sample slider (demo widths, K = 10): lower 15 -> 5, raise 5 -> 15, from the disk cache."""
    import shutil

    cache = tmp / "ensembles"
    shutil.rmtree(cache, ignore_errors=True)
    full = run_segment(image, model, 15, 10, tmp, cache)
    lower = run_segment(image, model, 5, 10, tmp, cache)
    shutil.rmtree(cache, ignore_errors=True)
    run_segment(image, model, 5, 10, tmp, cache)
    raise_ = run_segment(image, model, 15, 10, tmp, cache)
    ten_samples_network = full["network_s"] * 10 / 15
    return {"lower_15_to_5": {"wall_s": round(lower["wall_s"], 3), "evaluations": lower["evaluations"],
                              "samples_from_cache": lower["samples_from_cache"],
                              "ensemble_s": lower["timings"]["ensemble_s"]},
            "raise_5_to_15": {"wall_s": round(raise_["wall_s"], 3), "evaluations": raise_["evaluations"],
                              "network_time_of_10_samples_s": round(ten_samples_network, 3),
                              "ratio": round(raise_["wall_s"] / ten_samples_network, 3)}}


def markdown_table(records: list[dict], machine: dict, peer_s: float | None, targets: dict) -> str:
    lines = [f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
             f"({machine['torch_threads']} threads), device {machine['device']}"
             + (f" ({machine['gpu']})" if machine.get("gpu") else "")
             + f"; load average {machine['load_average_at_start']} at start, {machine.get('load_average_at_end')} at end.",
             f"nnU-Net-like peer (PlainConvUNet 2D, 320², 4-flip mirroring, all slices): "
             + (f"{peer_s:.2f} s" if peer_s else f"not run ({PEER_INSTALL})"), "",
             "| widths | grid | S | K | wall s | network s | evals/s | overhead | × naive | × nnU-Net | estimated |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['widths']} | {r['size']}² | {r['samples']} | {r['steps']} | {r['wall_s']} | {r['network_s']} | "
              f"{r['evaluations_per_s']} | {r['overhead_share']:.1%} | {r['speedup_vs_naive']} | "
              f"{r['x_nnunet'] if r['x_nnunet'] is not None else '-'} | {'yes' if r['estimated'] else ''} |"
              for r in records]
    if targets:
        lines += ["", "Targets:", "```", json.dumps(targets, indent=1), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
