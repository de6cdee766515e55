"""What the panel shows before a run (SpineSegDiffSlicerLib.engine_info): a real
`python -m SpineSegDiffLib info --json` process started like a segmentation, its caches
(sizes, clearing) and the device line; plus the engine's answer to `--device mps` here."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import REPO
from SpineSegDiffSlicerLib.engine_info import (SAMPLE_CACHE_NOTE, available_devices, cache_rows, device_text,
                                               info_command, read_info)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "cache" / "models"))  # the engine process inherits it
    samples = tmp_path / "cache" / "ensembles" / "key"
    samples.mkdir(parents=True)
    (samples / "sample_0000_00000000.npy").write_bytes(b"0" * 3 * 1024 * 1024)
    return tmp_path / "cache"


def test_the_panel_reads_caches_and_device_from_a_real_engine_process(cache_root):
    report = read_info(sys.executable, REPO)
    rows = {row["kind"]: row for row in cache_rows(report)}
    assert rows["ensembles"]["folder"] == str(cache_root / "ensembles") and rows["ensembles"]["size"] == "3.0 MB"
    assert rows["models"]["folder"] == str(cache_root / "models")
    assert "derived from patient images" in rows["ensembles"]["note"] == SAMPLE_CACHE_NOTE
    assert rows["ensembles"]["title"] == "Sample cache" and rows["models"]["title"] == "Model cache"
    devices = report["devices"]
    line = device_text(report, "auto")
    assert f"torch {devices['torch']}" in line
    if devices["auto"] == "cpu":  # this machine: the line names the CPU threads torch uses
        assert f"CPU ({devices['cpu']['threads']} threads of {os.cpu_count()} cores)" in line
        assert available_devices(report)[-1] == "cpu"
    if not devices["mps"]:
        assert "mps" not in available_devices(report)
        assert "no Apple GPU (MPS) here, the run falls back to the CPU" in device_text(report, "mps")


def test_clear_buttons_empty_the_caches_through_the_engine(cache_root):
    report = read_info(sys.executable, REPO, clear=["ensembles"])
    assert report["cleared_bytes"] == {"ensembles": 3 * 1024 * 1024}
    assert not any((cache_root / "ensembles").rglob("*.npy"))
    assert {row["kind"]: row["size"] for row in cache_rows(report)}["ensembles"] == "0 KB"
    with pytest.raises(ValueError, match="unknown cache 'samples'"):
        info_command(sys.executable, ["samples"])


def test_a_failing_engine_gives_its_one_line(tmp_path):
    """An engine that cannot start torch ends with 'error: ...' on stderr: the panel shows that line."""
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'error: torch cannot be imported (libcuda missing)' >&2\nexit 2\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"^spinesegdiff info failed: torch cannot be imported \(libcuda missing\)$"):
        read_info(broken, REPO, timeout=60)


def test_device_lines_for_gpus_this_machine_may_not_have():
    base = {"torch": "2.9.0", "cuda": [], "mps": False, "auto": "cpu", "cpu": {"threads": 8, "cores": 8}}
    cuda = dict(base, cuda=[{"index": 0, "name": "NVIDIA H200", "memory_gb": 139.8}], auto="cuda")
    assert device_text({"devices": cuda}) == "CUDA GPU 0: NVIDIA H200 (139.8 GB); torch 2.9.0"
    assert available_devices({"devices": cuda}) == ["auto", "cuda", "cpu"]
    mps = dict(base, mps=True, auto="mps")
    assert device_text({"devices": mps}, "auto").startswith("Apple GPU (MPS)")
    assert device_text({"devices": mps}, "cpu").startswith("CPU (8 threads")
    assert available_devices({"devices": mps}) == ["auto", "mps", "cpu"]


def test_the_engine_takes_device_mps_and_says_when_it_falls_back():
    """`--device mps` is a valid choice everywhere; without an Apple GPU the run goes to the CPU
    with a note (checked on this CPU machine with the engine's real device choice)."""
    import torch

    from SpineSegDiffLib.model.devices import choose_device

    device, note = choose_device("mps")
    if torch.backends.mps.is_available():
        assert device.type == "mps" and note is None
    else:
        assert device.type == "cpu" and note == "no Apple GPU (MPS) is available: running on the CPU (slower)"


def test_caches_are_shown_before_torch_is_installed(cache_root, tmp_path):
    """Slicer before its dependencies: `info --json` still reports the caches, and the device line says why not."""
    import json
    import subprocess

    code = ("import sys; sys.modules['torch'] = None; from SpineSegDiffLib.cli.entry import main; "
            "sys.exit(main(['info', '--json']))")  # torch made unimportable, as in a fresh Slicer
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["devices"]["torch"] is None and "torch is not installed" in report["devices"]["note"]
    assert {row["kind"]: row["size"] for row in cache_rows(report)}["ensembles"] == "3.0 MB"
    assert device_text(report) == "not known yet: torch is not installed (Segment offers to install it)"
    assert available_devices(report) == ["auto", "cuda", "mps", "cpu"]  # nothing greyed out before torch is known
