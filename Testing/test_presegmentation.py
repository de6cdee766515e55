"""The presegmenter: its training stage, the model file with and without it, sampling from
the noised presegmentation, and the presegmentation as the first result (real tiny models,
real files, real subprocesses)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SpineSegDiffLib.model.modelfile import build_model, load_model_file


def _stage_config(**overrides):
    from engine_fixtures import TINY_GRID
    from SpineSegDiffLib.training.config import TrainConfig

    values = dict(features="tiny", image_channels=1, epochs=1, batch_size=8, val_fraction=0.5,
                  calibrate=False, stage="presegmenter", preseg_t_max=300, preseg_steps=2,
                  **TINY_GRID)
    values.update(overrides)
    return TrainConfig(**values)


def _train_stage(tiny_model: Path, data: Path, out: Path, resume: bool = False, **overrides):
    from SpineSegDiffLib.training.data import load_folder
    from SpineSegDiffLib.training.loop import train

    cfg = _stage_config(**overrides)
    mf = load_model_file(tiny_model)
    logs: list[str] = []
    result = train(load_folder(data, cfg.grid_spec()), cfg, out, device="cpu", resume=resume,
                   log=logs.append, init_state=mf.state_dict, init_metadata=mf.metadata)
    return result, logs


@pytest.fixture(scope="module")
def preseg_model(tiny_model, phantom_folder, tmp_path_factory) -> Path:
    result, _ = _train_stage(tiny_model, phantom_folder, tmp_path_factory.mktemp("preseg"))
    return result.model_path


def _image(phantom_folder: Path) -> Path:
    return sorted((phantom_folder / "images").glob("*_t2.mha"))[0]


def test_head_stage_keeps_the_denoiser_records_itself_and_resumes(tiny_model, phantom_folder, tmp_path):
    first, _ = _train_stage(tiny_model, phantom_folder, tmp_path)
    old, new = load_model_file(tiny_model), load_model_file(first.model_path)
    head = {k for k in new.state_dict if k.startswith("presegmenter.")}
    assert head and set(new.state_dict) - head == set(old.state_dict)
    for name, tensor in old.state_dict.items():  # the denoiser (calibration included) is untouched
        assert torch.equal(tensor, new.state_dict[name]), name
    assert new.metadata["presegmentation"]["t_max"] == 300 and new.metadata["presegmentation"]["steps"] == 2
    assert new.metadata["training"]["stages"][-1]["stage"] == "presegmenter"
    assert new.metadata["training"]["train_cases"] == old.metadata["training"]["train_cases"]
    assert first.history[-1]["val_dice"]  # validated on the held-out patient

    second, logs = _train_stage(tiny_model, phantom_folder, tmp_path, resume=True, epochs=2)
    assert any("resumed" in line and "epoch 1" in line for line in logs)
    assert [h["epoch"] for h in second.history] == [1, 2]
    trained = load_model_file(second.model_path).state_dict
    assert any(not torch.equal(new.state_dict[k], trained[k]) for k in head)  # epoch 2 trained the head


def test_diffusion_from_presegmentation_stage_trains_only_the_denoiser(preseg_model, phantom_folder, tmp_path):
    from SpineSegDiffLib.training.data import load_folder
    from SpineSegDiffLib.training.loop import train

    cfg = _stage_config(stage="diffusion-from-presegmentation")
    mf = load_model_file(preseg_model)
    result = train(load_folder(phantom_folder, cfg.grid_spec()), cfg, tmp_path, device="cpu",
                   log=lambda m: None, init_state=mf.state_dict, init_metadata=mf.metadata)
    new = load_model_file(result.model_path).state_dict
    frozen = [k for k in new if k.startswith(("presegmenter.", "image_encoder."))]
    assert frozen and all(torch.equal(mf.state_dict[k], new[k]) for k in frozen)
    assert any(not torch.equal(mf.state_dict[k], new[k]) for k in new if k.startswith("downs."))


def test_presegmenter_stages_need_a_model_to_start_from(tiny_model, phantom_folder, tmp_path, cli):
    r = cli("train", phantom_folder, "--out", tmp_path, "--stage", "presegmenter", "--limit-cases", 1)
    assert r.returncode == 2 and "--init" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", phantom_folder, "--out", tmp_path, "--stage", "diffusion-from-presegmentation",
            "--init", tiny_model, "--limit-cases", 1)
    assert r.returncode == 2 and "no presegmenter" in r.stderr and "Traceback" not in r.stderr


def test_model_files_with_and_without_presegmenter_load(tiny_model, preseg_model):
    old = build_model(load_model_file(tiny_model))
    assert getattr(old, "presegmenter", None) is None
    new = build_model(load_model_file(preseg_model))
    image = torch.zeros(2, 1, 64, 64)
    logits = new.presegmenter(new.encode(image))
    assert logits.shape == (2, 3, 64, 64)


def _segment(model_path: Path, image_path: Path, **settings):
    from SpineSegDiffLib.data.imageio import read_mri
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(model_path, "cpu")
    return segment_image(read_mri(image_path), model, SegmentSettings(**settings))


def test_presegmentation_start_is_reproducible_and_samples_differ_by_seed(preseg_model, phantom_folder):
    image = _image(phantom_folder)
    a = _segment(preseg_model, image, samples=2, steps=2, seed=3)
    b = _segment(preseg_model, image, samples=2, steps=2, seed=3)
    c = _segment(preseg_model, image, samples=2, steps=2, seed=4)
    noise = _segment(preseg_model, image, samples=2, steps=2, seed=3, start="noise")
    assert a.summary["settings"]["start"] == "presegmentation" and a.summary["settings"]["t_max"] == 300
    assert noise.summary["settings"]["start"] == "noise"
    assert a.summary["presegmentation_evaluations"] > 0
    pa, pb, pc, pn = (np.stack([sitk.GetArrayFromImage(p) for p in r.probabilities]) for r in (a, b, c, noise))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc) and not np.array_equal(pa, pn)
    # two samples from one presegmentation still disagree somewhere: the uncertainty remains
    assert sitk.GetArrayFromImage(a.uncertainty).max() > 0


def test_sample_cache_tells_starts_and_t_max_apart(preseg_model, phantom_folder, tmp_path):
    image = _image(phantom_folder)
    common = dict(samples=2, steps=2, seed=1, cache=True, cache_dir=tmp_path)
    first = _segment(preseg_model, image, **common)
    again = _segment(preseg_model, image, **common)
    other_t = _segment(preseg_model, image, t_max=200, **common)
    noise = _segment(preseg_model, image, start="noise", **common)
    assert first.summary["cache"]["samples_from_cache"] == 0
    assert again.summary["cache"]["samples_from_cache"] == 2
    assert other_t.summary["cache"]["samples_from_cache"] == 0
    assert noise.summary["cache"]["samples_from_cache"] == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first.labelmap), sitk.GetArrayFromImage(again.labelmap))


def test_presegmentation_is_the_first_result_through_the_slicer_process_runner(preseg_model, phantom_folder, tmp_path):
    from conftest import REPO
    from SpineSegDiffSlicerLib.process_runner import EngineProcess, presegmentation_path, python_environment

    image = _image(phantom_folder)
    pre, seg = tmp_path / "pre.nii.gz", tmp_path / "seg.nii.gz"
    events: list[tuple[str, bool]] = []

    def on_progress(record):  # is the presegmentation on disk when it is announced?
        path = presegmentation_path(record)
        events.append((record["stage"], bool(path) and Path(path).is_file()))

    command = [sys.executable, "-m", "SpineSegDiffLib", "segment", str(image), "--model", str(preseg_model),
               "--samples", "2", "--device", "cpu", "--no-cache", "--output-presegmentation", str(pre),
               "--output-segmentation", str(seg), "--progress", "json"]
    proc = EngineProcess(command, on_progress, lambda r: None, env=python_environment(REPO))
    proc.start()
    result = proc.wait(300)
    assert result.ok, result.stderr
    stages = [stage for stage, _ in events]
    announced = [i for i, (stage, on_disk) in enumerate(events) if stage == "presegmentation" and on_disk]
    assert announced and announced[0] < stages.index("sample")
    assert result.presegmentation_path == str(pre)
    presegmentation, original = sitk.ReadImage(str(pre)), sitk.ReadImage(str(image))
    assert presegmentation.GetSize() == original.GetSize()
    np.testing.assert_allclose(presegmentation.GetOrigin(), original.GetOrigin(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(presegmentation))) <= {0, 1, 2, 3}


@pytest.mark.parametrize("option", [["--start", "presegmentation"], ["--output-presegmentation", "PRE"]])
def test_models_without_presegmenter_refuse_it_in_one_line(cli, tiny_model, phantom_folder, tmp_path, option):
    option = [str(tmp_path / "pre.nii.gz") if o == "PRE" else o for o in option]
    r = cli("segment", _image(phantom_folder), "--model", tiny_model, "--samples", 1, "--steps", 1,
            "--output-segmentation", tmp_path / "seg.nii.gz", "--device", "cpu", "--progress", "none", *option)
    assert r.returncode == 2 and "no presegmenter" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "seg.nii.gz").exists() and not (tmp_path / "pre.nii.gz").exists()


def test_old_model_files_still_start_from_noise(cli, tiny_model, phantom_folder, tmp_path):
    summary = tmp_path / "s.json"
    r = cli("segment", _image(phantom_folder), "--model", tiny_model, "--samples", 1, "--steps", 2,
            "--output-summary", summary, "--device", "cpu", "--progress", "none", "--no-cache")
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["settings"]["start"] == "noise" and s["settings"]["t_max"] is None
    assert s["presegmentation_evaluations"] == 0
