"""`train` refuses a config with wrong types and a damaged checkpoint in one line, leaves no
empty run folder, and says so when --resume finds no checkpoint."""

from __future__ import annotations

import json

import pytest

from engine_fixtures import TINY_GRID
from reliability_helpers import error_line, run_main, sha

TINY = ["--features", "tiny", "--image-channels", 1, "--epochs", 1, "--batch-size", 8, "--val-fraction", 0.5,
        "--val-steps", 2, "--default-samples", 2, "--default-steps", 3, "--fused-steps", 2,
        "--calibrate", "false", "--progress", "none", "--device", "cpu"] + [
    a for k, v in TINY_GRID.items() for a in ("--" + k.replace("_", "-"), v)]


@pytest.mark.parametrize("config,expected", [
    ({"epochs": "3"}, "--epochs should be a whole number"), ({"lr": "fast"}, "--lr should be a number"),
    ({"augment": "yes"}, "--augment should be true or false"), ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"val_fraction": 2}, "--val-fraction must be between 0 and 1"), (["epochs", 3], "a JSON object"),
    ({"epoch": 3}, "unknown options epoch"),
    ({"vertebra_size_prior": -1}, "--vertebra-size-prior must be 0 (off) or more")])
def test_config_of_wrong_type_is_one_line_and_leaves_no_run_folder(cli, tmp_path, phantom_folder, config, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    before = sha(path)
    out = tmp_path / "run"
    run = cli if expected.startswith("--epochs") else run_main  # one real subprocess, the rest in-process
    line = error_line(run("train", phantom_folder, "--out", out, "--config", path, "--progress", "none"))
    assert expected in line and str(path) in line
    assert not out.exists() and sha(path) == before


def test_resume_from_a_truncated_checkpoint_is_one_line(tmp_path, phantom_folder):
    import torch

    out = tmp_path / "run"
    out.mkdir()
    checkpoint = out / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 1}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-300])
    before = sha(checkpoint)
    line = error_line(run_main("train", phantom_folder, "--out", out, "--resume", *TINY))
    assert "cannot resume from this checkpoint" in line and "truncated or damaged" in line
    assert sha(checkpoint) == before and sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


@pytest.mark.slow
def test_resume_without_a_checkpoint_says_it_starts_afresh(cli, tmp_path, phantom_folder):
    out = tmp_path / "run"
    r = cli("train", phantom_folder, "--out", out, "--resume", *TINY)
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("warning: --resume: no checkpoint") for line in r.stderr.splitlines()), r.stderr
    assert (out / "model.zip").is_file()
