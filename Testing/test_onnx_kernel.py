"""The optional ONNX Runtime kernel on the CPU (core/cpu_kernel.py, model/onnx_network.py): used when
installed, the same logits as eager PyTorch within the export check, the same masks through the real
CLI, eager PyTorch when it is missing or switched off, and its samples never served as eager ones."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import REPO, run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnx_network_gives_eager_logits(tiny_model, monkeypatch):
    from SpineSegDiffLib.inference.loading import load_model

    monkeypatch.delenv("SPINESEGDIFF_CPU_KERNEL", raising=False)
    model = load_model(tiny_model, "cpu")
    assert model.kernel == "onnxruntime"
    eager = model.network.network  # the PyTorch network behind it
    size = model.grid_spec.size
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((3, model.image_channels, size, size), dtype=np.float32))
    x_t = torch.from_numpy(rng.standard_normal((3, 3, size, size), dtype=np.float32))
    with torch.inference_mode():
        expected = eager.denoise(x_t, 300, image, eager.encode(image))
    got = model.network.denoise(x_t, 300, image, model.network.encode(image))
    assert got.shape == expected.shape and float((got - expected).abs().max()) < 1e-3
    assert model.network.config is eager.config  # everything else is the PyTorch network's

    monkeypatch.setenv("SPINESEGDIFF_CPU_KERNEL", "eager")
    assert load_model(tiny_model, "cpu").kernel == "eager"


def _segment(image, model, out, kernel):
    env_kernel = {"SPINESEGDIFF_CPU_KERNEL": kernel} if kernel == "eager" else {}
    old = {k: os.environ.get(k) for k in env_kernel}
    os.environ.update(env_kernel)
    try:
        run = run_cli("segment", str(image), "--model", str(model), "--device", "cpu", "--samples", "2", "--steps",
                      "2", "--output-segmentation", str(out), "--progress", "none")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ONNX Runtime not used" not in run.stderr
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out)))


def test_cli_masks_with_onnx_runtime_equal_eager_ones(tmp_path, phantom_folder, tiny_model):
    image = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    with_ort = _segment(image, tiny_model, tmp_path / "ort.nii", "onnxruntime")
    eager = _segment(image, tiny_model, tmp_path / "eager.nii", "eager")
    for value in (1, 2, 3):
        a, b = with_ort == value, eager == value
        total = a.sum() + b.sum()
        assert total == 0 or 2 * (a & b).sum() / total >= 0.995, value


def test_without_onnx_runtime_the_engine_runs_eager_pytorch(tiny_model):
    script = ("import sys; sys.modules['onnxruntime'] = None; sys.path.insert(0, %r)\n"
              "from SpineSegDiffLib.core.cpu_kernel import cpu_kernel\n"
              "from SpineSegDiffLib.inference.loading import load_model\n"
              "from SpineSegDiffLib.model.network import DiffUNet\n"
              "model = load_model(%r, 'cpu')\n"
              "print(cpu_kernel(), model.kernel, isinstance(model.network, DiffUNet))" % (str(REPO), str(tiny_model)))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["eager", "eager", "True"]
    assert "warning" not in run.stderr


def test_kernel_is_part_of_both_cache_keys(monkeypatch):
    from SpineSegDiffLib.inference.request_index import device_fingerprint

    monkeypatch.delenv("SPINESEGDIFF_CPU_KERNEL", raising=False)
    assert device_fingerprint("cpu")["cpu_kernel"] == "onnxruntime"
    monkeypatch.setenv("SPINESEGDIFF_CPU_KERNEL", "eager")
    assert "cpu_kernel" not in device_fingerprint("cpu")  # eager keys as before: old caches still hit
