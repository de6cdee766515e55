#!/usr/bin/env python
"""ONNX Runtime against eager PyTorch for the denoiser network on the CPU, measured in one run.

    .venv/bin/python benchmarks/onnx_kernel.py --image ../shared/data/real/images/VB2_04.nii.gz \
        --slices 4 --repeats 3 --threads 1,2

Exports the bundled model's image encoder and denoiser to ONNX (torch.onnx, opset 17, the
batch axis dynamic), then:

* one denoiser call on ``--slices`` central grid slices of ``--image`` (one sample per row,
  as the engine calls it on the CPU), eager vs ONNX Runtime, at each of ``--threads``,
  alternating ``--repeats`` times so all see the same load; max |logit difference|;
* a full segmentation (S ``--samples``, K ``--steps``, start noise, no cache) of one T2
  phantom with the engine's pipeline, once with the eager network and once with ONNX
  Runtime behind the same ``encode`` / ``denoise`` calls; Dice per structure ORT vs eager
  (the rule: adopt only if faster AND within 0.005) and each against the phantom's truth.

Records the CPU's features, torch / onnxruntime / onnx versions and the load average.
Results: results/onnx_kernel-<date>.json. onnxruntime is not a dependency of the engine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from cpu_kernel import cpu_flags  # noqa: E402

FEATURE_NAMES = [f"f{i}" for i in range(5)]


class _Encode(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        return tuple(self.net.encode(image))


class _Denoise(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_t, t, image, f0, f1, f2, f3, f4):
        return self.net.denoise(x_t, t, image, [f0, f1, f2, f3, f4])


def export(net, folder: Path, channels: int, size: int) -> tuple[Path, Path]:
    """The encoder and the denoiser as ONNX files (batch axis dynamic)."""
    image = torch.zeros(2, channels, size, size)
    x_t = torch.zeros(2, 3, size, size)
    t = torch.tensor([500])
    with torch.inference_mode():
        features = net.encode(image)
    encoder, denoiser = folder / "encoder.onnx", folder / "denoiser.onnx"
    batch = {0: "batch"}
    torch.onnx.export(_Encode(net), (image,), str(encoder), input_names=["image"], output_names=FEATURE_NAMES,
                      dynamic_axes={"image": batch, **{n: batch for n in FEATURE_NAMES}}, opset_version=17,
                      dynamo=False)
    torch.onnx.export(_Denoise(net), (x_t, t, image, *features), str(denoiser),
                      input_names=["x_t", "t", "image", *FEATURE_NAMES], output_names=["logits"],
                      dynamic_axes={"x_t": batch, "image": batch, "logits": batch, **{n: batch for n in FEATURE_NAMES}},
                      opset_version=17, dynamo=False)
    return encoder, denoiser


class OrtNetwork:
    """``encode`` / ``denoise`` of the engine's network, computed by ONNX Runtime sessions."""

    def __init__(self, encoder: Path, denoiser: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder), options, providers=providers)
        self.denoiser = ort.InferenceSession(str(denoiser), options, providers=providers)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = self.encoder.run(None, {"image": image.float().numpy()})
        return [torch.from_numpy(f) for f in out]

    def denoise(self, x_t, t, image, features) -> torch.Tensor:
        n, batch = x_t.shape[0], features[0].shape[0]
        if n != batch:  # the CPU path calls one sample per row; repeat for other plans
            features = [f.repeat(n // batch, 1, 1, 1) for f in features]
        if image.shape[0] != n:
            image = image.repeat(n // image.shape[0], 1, 1, 1)
        t = torch.as_tensor(t).reshape(-1)[:1].to(torch.int64)
        feeds = {"x_t": x_t.float().numpy(), "t": t.numpy(), "image": image.float().numpy(),
                 **{name: f.float().numpy() for name, f in zip(FEATURE_NAMES, features)}}
        return torch.from_numpy(self.denoiser.run(None, feeds)[0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return round(2.0 * int((a & b).sum()) / total, 5) if total else 1.0


def segment_phantom(model, image, samples: int, steps: int, seed: int) -> tuple[np.ndarray, float]:
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    result = segment_image(image, model, SegmentSettings(samples=samples, steps=steps, seed=seed, cache=False,
                                                        start="noise"))
    return sitk.GetArrayFromImage(result.labelmap), float(result.summary["timings"]["network_s"])


def main() -> int:
    os.environ["SPINESEGDIFF_CPU_KERNEL"] = "eager"  # the eager PyTorch network is the baseline here
    import onnx
    import onnxruntime as ort

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.phantom.labels import semantic_from_spider_values
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.grid.slices import context_stack
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.model.registry import resolve_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--phantom-seed", type=int, default=1001)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results"
                   / f"onnx_kernel-{dt.date.today().isoformat()}.json")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    model = load_model(resolve_model(args.model), "cpu")
    net = model.network
    folder = Path(tempfile.mkdtemp(prefix="onnx-kernel-"))
    t0 = time.perf_counter()
    encoder, denoiser = export(net, folder, model.image_channels, model.grid_spec.size)
    export_s = time.perf_counter() - t0

    grid = to_model_grid(sitk.ReadImage(str(args.image)), model.grid_spec)
    mid = grid.slices.shape[0] // 2
    slices = grid.slices[max(0, mid - args.slices // 2):][:args.slices]
    image = torch.from_numpy(context_stack(slices.astype(np.float32), model.image_channels))
    x_t = torch.from_numpy(np.random.default_rng(0).standard_normal((len(slices), 3, *slices.shape[1:]),
                                                                     dtype=np.float32))
    t = torch.tensor([500])
    sessions = {k: OrtNetwork(encoder, denoiser, k) for k in threads}
    with torch.inference_mode():
        features = net.encode(image)
        eager_logits = net.denoise(x_t, t, image, features)
    ort_logits = sessions[threads[0]].denoise(x_t, t, image, features)
    max_diff = float((eager_logits - ort_logits).abs().max())

    seconds: dict[str, list[float]] = {f"{kind}_{k}t": [] for k in threads for kind in ("eager", "ort")}
    load = [os.getloadavg()]
    for _ in range(args.repeats):
        for k in threads:
            torch.set_num_threads(k)
            with torch.inference_mode():
                c0 = time.perf_counter()
                net.denoise(x_t, t, image, features)
                seconds[f"eager_{k}t"].append(time.perf_counter() - c0)
            c0 = time.perf_counter()
            sessions[k].denoise(x_t, t, image, features)
            seconds[f"ort_{k}t"].append(time.perf_counter() - c0)
    median = {k: round(float(np.median(v)), 4) for k, v in seconds.items()}

    # a whole segmentation, eager vs ORT behind the same calls (1 thread, as the engine's default here)
    torch.set_num_threads(1)
    case = generate_case(args.phantom_seed, 0, ("t2",))
    phantom = case.images["t2"]
    truth = semantic_from_spider_values(sitk.GetArrayFromImage(case.mask))
    eager_labels, eager_net_s = segment_phantom(model, phantom, args.samples, args.steps, 0)
    model.network = OrtNetwork(encoder, denoiser, 1)
    ort_labels, ort_net_s = segment_phantom(model, phantom, args.samples, args.steps, 0)
    model.network = net
    load.append(os.getloadavg())
    structures = {1: "canal", 2: "vertebrae", 3: "discs"}
    dice_ort_vs_eager = {name: dice(ort_labels == v, eager_labels == v) for v, name in structures.items()}
    dice_truth = {kind: {name: dice(labels == v, truth == v) for v, name in structures.items()}
                  for kind, labels in (("eager", eager_labels), ("ort", ort_labels))}
    faster = all(median[f"ort_{k}t"] < median[f"eager_{k}t"] for k in threads) and ort_net_s < eager_net_s
    record = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_flags(),
              "torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
              "load_average": load, "export_s": round(export_s, 2),
              "call": {"image": args.image.name, "slices": len(slices), "grid": list(slices.shape[1:]),
                       "repeats": args.repeats, "median_s": median, "all_s": seconds,
                       "ort_over_eager": {k: round(median[f"ort_{k}t"] / median[f"eager_{k}t"], 3) for k in threads},
                       "max_abs_logit_difference": max_diff},
              "segmentation": {"phantom": f"seed {args.phantom_seed} case 0 t2", "size": list(phantom.GetSize()),
                               "samples": args.samples, "steps": args.steps, "threads": 1,
                               "network_s": {"eager": round(eager_net_s, 2), "ort": round(ort_net_s, 2)},
                               "dice_ort_vs_eager": dice_ort_vs_eager, "dice_vs_truth": dice_truth},
              "adopt": bool(faster and min(dice_ort_vs_eager.values()) >= 0.995)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("cpu", "call", "segmentation", "adopt", "load_average")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
