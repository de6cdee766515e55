"""The network's ``encode`` / ``denoise`` on the CPU through ONNX Runtime (optional), exported once per model.

The loaded PyTorch network is exported (torch.onnx, opset 17, batch axis dynamic) to an
encoder and a denoiser file in the model cache, keyed by the model file's SHA-256 and the
torch / onnxruntime versions, and checked against eager PyTorch on one call before use.
``OnnxNetwork`` answers ``encode`` and ``denoise`` like ``DiffUNet`` and hands every other
attribute (config, presegmenter head, ...) to the PyTorch network. Anything failing (export,
session, check) gives None and the caller keeps eager PyTorch, with one warning.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.caches import models_dir
from SpineSegDiffLib.core.hashing import sha256_file
from SpineSegDiffLib.core.log import warn

OPSET = 17
FEATURES = [f"f{i}" for i in range(5)]
CHECK_TOLERANCE = 1e-2  # logits; the export measured 2e-4 (benchmarks/results/onnx_kernel-*.json)


class _Encode(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        return tuple(self.net.encode(image))


class _Denoise(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t, t, image, f0, f1, f2, f3, f4):
        return self.net.denoise(x_t, t, image, [f0, f1, f2, f3, f4])


def export(net: torch.nn.Module, folder: Path, channels: int, size: int) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``denoiser.onnx`` for ``net`` into ``folder`` (atomically)."""
    image, x_t, t = torch.zeros(1, channels, size, size), torch.zeros(1, 3, size, size), torch.tensor([500])
    with torch.inference_mode():
        features = net.encode(image)
    batch = {0: "batch"}
    encoder, denoiser = folder / "encoder.onnx", folder / "denoiser.onnx"
    with warnings.catch_warnings():  # the tracer's notes on shape checks that are constant here
        warnings.simplefilter("ignore")
        with atomic_path(encoder) as tmp:
            torch.onnx.export(_Encode(net), (image,), str(tmp), input_names=["image"], output_names=FEATURES,
                              dynamic_axes={"image": batch, **{n: batch for n in FEATURES}}, opset_version=OPSET,
                              dynamo=False)
        with atomic_path(denoiser) as tmp:
            torch.onnx.export(_Denoise(net), (x_t, t, image, *features), str(tmp),
                              input_names=["x_t", "t", "image", *FEATURES], output_names=["logits"],
                              dynamic_axes={"x_t": batch, "image": batch, "logits": batch,
                                            **{n: batch for n in FEATURES}}, opset_version=OPSET, dynamo=False)
    return encoder, denoiser


class OnnxNetwork:
    """``encode`` / ``denoise`` by ONNX Runtime sessions; everything else from the PyTorch network."""

    def __init__(self, network: torch.nn.Module, encoder: Path, denoiser: Path, threads: int, size: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.network = network
        self.size = size  # the export's slice size; other sizes (a --crop auto box) run in PyTorch
        self._encoder = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
        self._denoiser = ort.InferenceSession(str(denoiser), options, providers=["CPUExecutionProvider"])

    def __getattr__(self, name: str):  # only for names this class does not have
        if name == "network":
            raise AttributeError(name)
        return getattr(self.network, name)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        if tuple(image.shape[-2:]) != (self.size, self.size):
            return self.network.encode(image)
        return [torch.from_numpy(f) for f in self._encoder.run(None, {"image": _numpy(image)})]

    def denoise(self, x_t: torch.Tensor, t, image: torch.Tensor, features) -> torch.Tensor:
        n = x_t.shape[0]
        features = [f if f.shape[0] == n else f.repeat(n // f.shape[0], 1, 1, 1) for f in features]
        if image.shape[0] != n:
            image = image.repeat(n // image.shape[0], 1, 1, 1)
        steps = torch.as_tensor(t).reshape(-1).to(torch.int64)
        if steps.numel() != 1 or tuple(x_t.shape[-2:]) != (self.size, self.size):
            # the export takes one timestep for all rows (as the sampler calls it) and whole slices
            return self.network.denoise(x_t, t, image, features)
        feeds = {"x_t": _numpy(x_t), "t": steps.numpy(), "image": _numpy(image),
                 **{name: _numpy(f) for name, f in zip(FEATURES, features)}}
        return torch.from_numpy(self._denoiser.run(None, feeds)[0])


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


def _cache_folder(model_path: Path, channels: int, size: int) -> Path:
    import onnxruntime as ort

    identity = f"{sha256_file(model_path)} torch {torch.__version__} ort {ort.__version__} {OPSET} {channels} {size}"
    return models_dir() / "onnx" / hashlib.sha256(identity.encode()).hexdigest()[:32]


def onnx_network(network: torch.nn.Module, model_path: Path, size: int, channels: int) -> OnnxNetwork | None:
    """``network`` behind ONNX Runtime, or None (warned once) to keep eager PyTorch."""
    try:
        folder = _cache_folder(Path(model_path), channels, size)
        encoder, denoiser = folder / "encoder.onnx", folder / "denoiser.onnx"
        if not (encoder.is_file() and denoiser.is_file()):
            export(network, folder, channels, size)
        wrapped = OnnxNetwork(network, encoder, denoiser, torch.get_num_threads(), size)
        image = torch.linspace(-0.25, 1.25, size * size * channels).reshape(1, channels, size, size)
        x_t = torch.linspace(-1, 1, 3 * size * size).reshape(1, 3, size, size)
        with torch.inference_mode():
            expected = network.denoise(x_t, 500, image, network.encode(image))
        difference = float((wrapped.denoise(x_t, 500, image, wrapped.encode(image)) - expected).abs().max())
        if not difference < CHECK_TOLERANCE:
            raise RuntimeError(f"its logits differ from PyTorch's by {difference:.3g}")
        return wrapped
    except Exception as exc:  # an optional speed-up must never stop a segmentation
        warn(f"ONNX Runtime not used ({type(exc).__name__}: {str(exc)[:200]}); running the network in PyTorch")
        return None
