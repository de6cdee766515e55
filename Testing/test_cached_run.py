"""The sample slider's step: `segment` re-fusing cached samples in a process that cannot import
torch or MONAI gives the same files as the full pipeline; `--samples auto` and its rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from conftest import REPO

# the real CLI, in a process where `import torch` / `import monai` raise
NO_TORCH = """
import sys
sys.modules["torch"] = None
sys.modules["monai"] = None
from SpineSegDiffLib.cli.entry import main
code = main(sys.argv[1:])
loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "monai", "scipy") and sys.modules[m] is not None]
print("LOADED", loaded)
sys.exit(code)
"""


def _run(args, cache, torch_free=False):
    env = dict(os.environ, SPINESEGDIFF_CACHE=str(cache / "models"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    head = [sys.executable, "-c", NO_TORCH] if torch_free else [sys.executable, "-m", "SpineSegDiffLib"]
    return subprocess.run(head + [str(a) for a in args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=900)


def _segment(image, model, out, samples, cache, *extra, torch_free=False):
    out.mkdir(parents=True, exist_ok=True)
    run = _run(["segment", image, "--model", model, "--device", "cpu", "--samples", samples, "--steps", 2,
                "--output-segmentation", out / "seg.nii", "--output-uncertainty", out / "unc.nii",
                "--output-summary", out / "summary.json", "--progress", "none", *extra], cache, torch_free)
    assert run.returncode == 0, run.stderr[-3000:]
    return run, json.loads((out / "summary.json").read_text())


def _voxels(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_lowering_s_from_the_cache_needs_no_torch_and_equals_the_full_pipeline(tmp_path, phantom_folder,
                                                                              tiny_model):
    image = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    cache = tmp_path / "cache"
    _, first = _segment(image, tiny_model, tmp_path / "s3", 3, cache)
    assert first["cache"]["samples_computed"] == 3

    run, lowered = _segment(image, tiny_model, tmp_path / "s2", 2, cache, torch_free=True)
    assert "LOADED []" in run.stdout  # neither torch, MONAI nor scipy was imported
    assert lowered["cache"]["torch_free"] is True and lowered["cache"]["samples_from_cache"] == 2
    assert lowered["network_evaluations"] == 0 and lowered["settings"]["device"] == "cpu"

    _, fresh = _segment(image, tiny_model, tmp_path / "fresh", 2, cache, "--no-cache")
    assert fresh["cache"]["enabled"] is False
    for name in ("seg.nii", "unc.nii"):
        assert np.array_equal(_voxels(tmp_path / "s2" / name), _voxels(tmp_path / "fresh" / name)), name
    assert lowered["structures"] == fresh["structures"]

    # more samples than cached: the torch-free process cannot serve it and says so in one line
    run = _run(["segment", image, "--model", tiny_model, "--device", "cpu", "--samples", 4, "--steps", 2,
                "--output-segmentation", tmp_path / "s4.nii", "--progress", "none"], cache, torch_free=True)
    assert run.returncode != 0 and "torch" in run.stderr  # the guard really blocks torch
    # another seed is another request: never served from this ensemble
    run, other = _segment(image, tiny_model, tmp_path / "seed", 2, cache, "--seed", 7)
    assert other["cache"]["samples_from_cache"] == 0 and "torch_free" not in other["cache"]


def test_samples_auto_stops_by_its_rule_and_the_cache_replays_it(tmp_path, phantom_folder, tiny_model):
    from SpineSegDiffLib.inference import auto_samples

    image = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    cache = tmp_path / "cache"
    _, drawn = _segment(image, tiny_model, tmp_path / "auto", "auto", cache)
    trace = drawn["samples_auto"]["trace"]
    chosen = drawn["settings"]["samples"]
    assert [t["samples"] for t in trace] == auto_samples.sizes(auto_samples.CAP)[:len(trace)]
    assert trace[-1]["samples"] == chosen == drawn["cache"]["samples_computed"]
    # stopped at the first stable size, or at the cap
    stable = [auto_samples.is_stable(t) for t in trace[1:]]
    assert (stable and stable[-1] and not any(stable[:-1])) or chosen == auto_samples.CAP

    run, replay = _segment(image, tiny_model, tmp_path / "replay", "auto", cache, torch_free=True)
    assert replay["samples_auto"] == drawn["samples_auto"] and replay["network_evaluations"] == 0
    for name in ("seg.nii", "unc.nii"):
        assert np.array_equal(_voxels(tmp_path / "auto" / name), _voxels(tmp_path / "replay" / name)), name


def test_samples_option_rejects_other_words_in_one_line(cli, tmp_path, phantom_folder):
    image = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    run = cli("segment", image, "--samples", "many", "--output-segmentation", tmp_path / "s.nii")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "expected a whole number or 'auto'" in run.stderr


def test_auto_rule_on_fused_results():
    from SpineSegDiffLib.inference.auto_samples import change_between, is_stable, sizes
    from SpineSegDiffLib.inference.fusion import GridPrediction

    p = np.zeros((2, 3, 8, 8), np.float32)
    p[:, :, 2:6, 2:6] = 0.9
    h = np.zeros_like(p)
    h[:, :, 2:6, 2] = 0.5
    same = change_between(GridPrediction(p, h), GridPrediction(p.copy(), h.copy()))
    assert same == {"dice": 1.0, "uncertainty_change": 0.0} and is_stable(same)
    q = p.copy()
    q[:, 1, 2:6, 2:4] = 0.1  # half of one structure flips
    moved = change_between(GridPrediction(p, h), GridPrediction(q, h + 0.1 * (h > 0)))
    assert moved["dice"] < 0.99 and abs(moved["uncertainty_change"] - 0.1) < 1e-6 and not is_stable(moved)
    assert sizes(15) == [3, 5, 7, 9, 11, 13, 15] and sizes(4) == [3, 4] and sizes(1) == [1]
