"""Which kernel runs the network on the CPU: ONNX Runtime when it is installed, else eager PyTorch.

ONNX Runtime (optional: ``onnxruntime`` and ``onnx``, pinned in requirements.txt) was 0.41x
eager PyTorch per denoiser call and 0.59x over a whole S = 3, K = 10 segmentation, with the
same masks (benchmarks/README.md, ``benchmarks/onnx_kernel.py``). Decided without importing
torch or either package, because the torch-free request index (``inference/request_index.py``)
keys on it too: samples drawn by one kernel are never served as another's.
``SPINESEGDIFF_CPU_KERNEL=eager`` forces eager PyTorch.
"""

from __future__ import annotations

import importlib.util
import os

ENV = "SPINESEGDIFF_CPU_KERNEL"
ONNX_PACKAGES = ("onnxruntime", "onnx")  # onnx: torch.onnx.export needs it


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def cpu_kernel() -> str:
    """"onnxruntime" or "eager"."""
    if os.environ.get(ENV, "").strip().lower() == "eager":
        return "eager"
    return "onnxruntime" if all(_installed(name) for name in ONNX_PACKAGES) else "eager"
