"""scripts/package_demo_model.py: a trained file becomes the registry's model, or nothing changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from test_modelfile import make_metadata, small_state_dict

from SpineSegDiffLib.core.hashing import sha256_file
from SpineSegDiffLib.model.modelfile import load_model_file, save_model
from SpineSegDiffLib.model.presegmenter import WEIGHT_PREFIX
from SpineSegDiffLib.model.registry import BUNDLED_REGISTRY, load_registry

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "package_demo_model.py"


def _package(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(weights with a head, scored denoiser-only file, bundled file, registry copy)."""
    denoiser = small_state_dict()
    head = {f"{WEIGHT_PREFIX}out.weight": torch.ones(3, 4)}
    weights = tmp_path / "model-pre.zip"
    save_model(weights, {**denoiser, **head},
               make_metadata(id="spinesegdiff-demo", metrics={"presegmenter_validation_dice": [0.9, 0.9, 0.9]},
                             presegmentation={"kind": "encoder-head", "t_max": 600, "steps": 3,
                                              "default_start": "presegmentation"}))
    scored = tmp_path / "scored.zip"
    save_model(scored, denoiser, make_metadata(id="spinesegdiff-demo", metrics={"evaluation": {"dice": 0.8}}))
    bundled = tmp_path / "bundled.zip"
    bundled.write_bytes(b"the old model")
    registry = tmp_path / "Models.json"
    shutil.copy(BUNDLED_REGISTRY, registry)
    return weights, scored, bundled, registry


def test_packaging_writes_the_model_and_points_the_registry_at_it(tmp_path):
    weights, scored, bundled, registry = _files(tmp_path)
    before = json.loads(registry.read_text())["models"][0]
    done = _package(weights, "--scores", scored, "--version", "9.8.7", "--default-start", "noise",
                    "--training-data", "9.8.7: a test", "--description", "new text",
                    "--out", bundled, "--registry", registry)
    assert done.returncode == 0, done.stderr
    model = load_model_file(bundled)
    assert model.metadata["version"] == "9.8.7"
    assert model.metadata["presegmentation"]["default_start"] == "noise"
    # the scoring run's metrics are added, the head's own record is kept
    assert model.metadata["metrics"]["evaluation"] == {"dice": 0.8}
    assert model.metadata["metrics"]["presegmenter_validation_dice"] == [0.9, 0.9, 0.9]
    assert any(k.startswith(WEIGHT_PREFIX) for k in model.state_dict)
    entry = next(e for e in load_registry(registry) if e.id == "spinesegdiff-demo")
    assert (entry.version, entry.sha256, entry.size_bytes) == ("9.8.7", sha256_file(bundled), bundled.stat().st_size)
    assert entry.training_data == before["training_data"] + "; 9.8.7: a test"
    assert entry.description == "new text"
    assert not list(tmp_path.glob("*.packaging"))


def test_scores_of_other_weights_change_nothing(tmp_path):
    weights, _, bundled, registry = _files(tmp_path)
    other = tmp_path / "other.zip"
    state = small_state_dict()
    state["enc.bias"] = state["enc.bias"] + 1
    save_model(other, state, make_metadata(id="spinesegdiff-demo"))
    registry_before = registry.read_bytes()
    done = _package(weights, "--scores", other, "--version", "9.8.7", "--out", bundled, "--registry", registry)
    assert done.returncode == 2
    assert "scored other weights" in done.stderr and "Traceback" not in done.stderr
    assert bundled.read_bytes() == b"the old model" and registry.read_bytes() == registry_before
    assert not list(tmp_path.glob("*.packaging"))


def test_default_start_needs_a_head(tmp_path):
    _, scored, bundled, registry = _files(tmp_path)
    done = _package(scored, "--version", "9.8.7", "--default-start", "noise", "--out", bundled, "--registry", registry)
    assert done.returncode == 2 and "no presegmenter head" in done.stderr
    assert bundled.read_bytes() == b"the old model"
