"""`spinesegdiff train` and `evaluate` as real subprocesses, and the pieces they rely on."""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest

from SpineSegDiffLib.model.modelfile import load_model_file

TINY = ("--features", "tiny", "--grid-size", "64", "--grid-spacing-mm", "4", "--batch-size", "8",
        "--val-steps", "2", "--device", "cpu", "--progress", "none")


def test_train_writes_a_loadable_model_and_resumes(cli, tmp_path, phantom_folder):
    out = tmp_path / "run"
    r = cli("train", phantom_folder, "--out", out, "--epochs", "1", "--val-fraction", "0.5", *TINY)
    assert r.returncode == 0, r.stderr
    first = load_model_file(out / "model.zip").metadata
    assert first["training"]["epochs_run"] == 1
    assert set(first["training"]["history"][0]["val_dice"]) == {"spinal_canal", "vertebrae", "discs"}
    # patient-wise split: t1 and t2 of a patient are on the same side
    train_ids, val_ids = first["training"]["train_cases"], first["training"]["validation_cases"]
    assert {c.split("_")[0] for c in train_ids}.isdisjoint({c.split("_")[0] for c in val_ids})

    r = cli("train", phantom_folder, "--out", out, "--epochs", "2", "--val-fraction", "0.5", "--resume", *TINY)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    second = load_model_file(out / "model.zip").metadata
    assert [h["epoch"] for h in second["training"]["history"]] == [1, 2]
    # loading never unpickles: the model file holds JSON and safetensors only
    assert sorted(zipfile.ZipFile(out / "model.zip").namelist()) == ["model.json", "weights.safetensors"]


def test_train_fine_tunes_from_a_model_and_widens_it_to_2_5d(cli, tmp_path, phantom_folder, tiny_model):
    """--init starts from a model's weights with its widths and grid; with a learning
    rate of ~0 the fine-tuned 2.5D network still holds the 2D model's weights."""
    out = tmp_path / "tuned"
    r = cli("train", phantom_folder, "--out", out, "--init", tiny_model, "--image-channels", "3",
            "--epochs", "1", "--val-fraction", "0.5", "--lr", "1e-12", "--augment", "false",
            "--calibrate", "false", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0, r.stderr
    base, tuned = load_model_file(tiny_model), load_model_file(out / "model.zip")
    assert tuned.metadata["architecture"]["features"] == base.metadata["architecture"]["features"]
    assert tuned.metadata["architecture"]["image_channels"] == 3
    assert tuned.metadata["preprocessing"]["grid"] == base.metadata["preprocessing"]["grid"]
    assert tuned.metadata["training"]["data"]["initialised_from"].startswith(base.metadata["id"])
    key = "image_encoder.conv_0.conv_0.conv.weight"
    w0, w1 = base.state_dict[key], tuned.state_dict[key]
    assert w1.shape[1] == 3 and np.allclose(w1[:, 1].numpy(), w0[:, 0].numpy(), atol=1e-6)
    assert np.abs(w1[:, [0, 2]].numpy()).max() < 1e-6  # neighbours start at zero

    r = cli("train", phantom_folder, "--out", tmp_path / "misfit", "--init", tiny_model, "--features", "small",
            "--epochs", "1", "--device", "cpu", "--progress", "none")
    assert r.returncode == 2 and "does not fit" in r.stderr and "Traceback" not in r.stderr


def test_train_refuses_a_folder_it_cannot_read(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("train", tmp_path / "empty", "--out", tmp_path / "run", *TINY)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "model.zip").exists()


def test_train_runs_under_torchrun_with_two_processes(tmp_path, phantom_folder):
    import os
    import subprocess

    from conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29533", "-m", "SpineSegDiffLib", "train", str(phantom_folder),
                        "--out", str(tmp_path / "ddp"), "--epochs", "1", "--val-fraction", "0.5", *TINY],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = load_model_file(tmp_path / "ddp" / "model.zip").metadata
    assert meta["training"]["epochs_run"] == 1


def test_evaluate_writes_json_markdown_and_pngs(cli, tmp_path, phantom_folder, tiny_model):
    out = tmp_path / "report"
    r = cli("evaluate", "--model", tiny_model, "--data", phantom_folder, "--out", out, "--samples", "1",
            "--steps", "2", "--sequences", "t2", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "evaluation.json").read_text())
    assert len(report["cases"]) == 2
    for case in report["cases"]:
        assert (out / case["png"]).stat().st_size > 1000
        for key in ("spinal_canal", "vertebrae", "discs"):
            dice = case["scores"]["structures"][key]["dice"]
            assert dice is None or 0.0 <= dice <= 1.0
    md = (out / "report.md").read_text()
    assert "| spider | 2 |" in md and all(c["png"] in md for c in report["cases"])


def test_evaluate_scores_vertebral_body_only_cases_as_recall(cli, tmp_path, tiny_model, real_data_dir):
    out = tmp_path / "report"
    r = cli("evaluate", "--model", tiny_model, "--data", real_data_dir, "--cases", "VB3_01,IVD_11",
            "--out", out, "--samples", "1", "--steps", "1", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0, r.stderr
    cases = {c["case"]: c["scores"]["structures"] for c in json.loads((out / "evaluation.json").read_text())["cases"]}
    vb = cases["VB3_01"]
    assert set(vb) == {"vertebrae", "discs"} and "recall" in vb["vertebrae"]
    assert "dice" not in vb["vertebrae"] and "dice" not in vb["discs"]
    # what recall hides: vertebra predicted where the body labels rule it out
    for key in ("far_false_positive_share", "disc_space_false_positive_share", "prevertebral_false_positive_share"):
        assert 0.0 <= vb["vertebrae"][key] <= 1.0
    assert 0.0 <= vb["discs"]["disc_space_recall"] <= 1.0
    md = (out / "report.md").read_text()
    assert "## Vertebrae where the body-only labels rule them out" in md and "| real:VB3 |" in md
    assert set(cases["IVD_11"]) == {"discs"} and "dice" in cases["IVD_11"]["discs"]


def test_partial_label_targets_ignore_unlabelled_structures_and_posterior_elements():
    from SpineSegDiffLib.training.targets import partial_label_targets

    labels = np.zeros((2, 64, 64), np.uint8)
    labels[:, 10:20, 20:30] = 2  # two vertebral bodies, 4 rows (8 mm) apart
    labels[:, 24:34, 20:30] = 2
    annotated = np.array([[False, True, False], [True, True, True]])
    targets, w = partial_label_targets(labels, annotated, np.array([True, False]), spacing_mm=2.0)
    assert (targets[0, 20:24, 20:30] == 3).all()  # the disc space between them is disc
    assert (targets[1] == labels[1]).all()  # fully labelled slices are left alone
    canal, vert, disc = w[0]
    assert vert[15, 25] == 1 and disc[15, 25] == 1 and canal[15, 25] == 1  # the body: vertebra, no disc/canal
    assert vert[22, 25] == 1 and disc[22, 25] == 1  # the disc space counts for both
    assert vert[25, 45] == 0 and disc[25, 45] == 0 and canal[25, 45] == 0  # behind the body: unknown
    assert vert[22, 10] == 1 and canal[22, 10] == 1  # 20 mm in front: prevertebral, nothing
    assert vert[5, 10] == 0  # in front but above the first body: unknown (an unlabelled vertebra?)
    assert vert[63, 63] == 1 and disc[63, 63] == 1  # far from every body: no spine there
    assert w[1].min() == 1  # a fully labelled slice weighs everything


def test_grid_cache_round_trip(tmp_path, phantom_folder):
    from SpineSegDiffLib.grid.geometry import GridSpec
    from SpineSegDiffLib.training.data import load_folder, load_grid_cases, save_grid_cases

    cases = load_folder(phantom_folder, GridSpec(spacing_mm=4.0, size=64))
    save_grid_cases(tmp_path / "cache.npz", cases)
    back = load_grid_cases(tmp_path / "cache.npz")
    assert [c.case_id for c in back] == [c.case_id for c in cases]
    for a, b in zip(cases, back):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.annotated, b.annotated)
        assert np.abs(a.slices - b.slices).max() <= 1.5 / 255 / 2 + 1e-6  # 8-bit over the clip range


@pytest.mark.parametrize("shift", [3, 6])
def test_metrics_on_known_geometry(shift):
    from SpineSegDiffLib.evaluation.metrics import auroc, dice, expected_calibration_error, hd95

    ref = np.zeros((20, 40, 40), bool)
    ref[5:15, 10:30, 10:30] = True
    pred = np.roll(ref, shift, axis=2)
    overlap = (20 - shift) / 20
    assert dice(pred, ref) == pytest.approx(overlap)
    assert hd95(pred, ref, (1.0, 1.0, 2.0)) == pytest.approx(2.0 * shift, abs=1e-6)
    err = pred != ref
    assert auroc(err.astype(float) + 0.01, err) == pytest.approx(1.0)
    p = np.full(10000, 0.3)
    y = np.zeros(10000, bool)
    y[:3000] = True
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-4)
    assert expected_calibration_error(np.full(10000, 0.9), y) == pytest.approx(0.6, abs=1e-4)


def test_fine_tuning_starts_from_the_given_weights(tmp_path, phantom_folder, tiny_model):
    import torch

    from engine_fixtures import TINY_GRID
    from SpineSegDiffLib.training.config import TrainConfig
    from SpineSegDiffLib.training.loop import train
    from SpineSegDiffLib.training.data import load_folder

    start = load_model_file(tiny_model).state_dict
    start["logit_scale"] = torch.full_like(start["logit_scale"], 3.0)  # as if calibrated
    cfg = TrainConfig(features="tiny", image_channels=1, epochs=1, batch_size=8, val_fraction=0.5, lr=1e-12,
                      augment=False, calibrate=False, **TINY_GRID)
    cases = load_folder(phantom_folder, cfg.grid_spec())
    result = train(cases, cfg, tmp_path / "ft", device="cpu", log=lambda m: None, init_state=start)
    tuned = load_model_file(result.model_path).state_dict
    # a vanishing learning rate keeps the weights where they started; calibration is reset
    for key, value in start.items():
        if key in ("logit_scale", "logit_bias"):
            continue
        torch.testing.assert_close(tuned[key], value, atol=1e-6, rtol=0)
    assert torch.equal(tuned["logit_scale"], torch.ones_like(tuned["logit_scale"]))


def test_time_budget_learning_rate_warms_up_on_time_then_anneals_to_the_floor():
    from SpineSegDiffLib.training.schedule import _time_lr_factor

    budget = 600.0
    f = [_time_lr_factor(t, budget, 0.05) for t in np.linspace(0, budget * 1.2, 241)]
    peak = int(np.argmax(f))
    assert abs(peak / 200 - 0.05) <= 0.01  # warm-up is the first 5 % of the time, however many steps
    assert f[0] <= 0.05 and max(f) == pytest.approx(1.0, abs=0.02)
    assert all(a >= b for a, b in zip(f[peak:], f[peak + 1:]))  # then only down
    assert f[200] == f[-1] == 0.02  # at the floor when the time is up, and after
