"""`spinesegdiff segment` end to end: a real subprocess, a real (tiny) model, real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import STRUCTURES


def _phantom_image(phantom_folder: Path) -> Path:
    return sorted((phantom_folder / "images").glob("*_t2.mha"))[0]


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_segment_writes_every_output_on_the_input_geometry(cli, tmp_path, phantom_folder, tiny_model):
    image_path = _phantom_image(phantom_folder)
    seg, unc, summ = tmp_path / "seg.nii.gz", tmp_path / "unc.nii.gz", tmp_path / "summary.json"
    r = cli("segment", image_path, "--model", tiny_model, "--samples", 2, "--steps", 3,
            "--output-segmentation", seg, "--output-uncertainty", unc, "--output-summary", summ,
            "--output-probabilities", tmp_path / "prob.nii.gz", "--output-extras", tmp_path / "extra.nii.gz",
            "--progress", "json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert lines[-1]["stage"] == "done" and lines[-1]["summary"] == str(summ)
    fractions = [line["fraction"] for line in lines]
    assert fractions == sorted(fractions), "progress must never go backwards"
    assert any(line["stage"] == "sample" for line in lines)

    image = sitk.ReadImage(str(image_path))
    labelmap, uncertainty = sitk.ReadImage(str(seg)), sitk.ReadImage(str(unc))
    for out in (labelmap, uncertainty, sitk.ReadImage(str(tmp_path / "prob.nii.gz"))):
        _assert_same_geometry(out, image)
    assert set(np.unique(sitk.GetArrayFromImage(labelmap))) <= {0, 1, 2, 3}
    u = sitk.GetArrayFromImage(uncertainty)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() <= 1.0
    assert (tmp_path / "extra_variance.nii.gz").exists() and (tmp_path / "extra_mutual_information.nii.gz").exists()
    summary = json.loads(summ.read_text())
    assert set(summary["structures"]) == {s.key for s in STRUCTURES}
    assert summary["settings"]["samples"] == 2 and summary["settings"]["steps"] == 3
    assert summary["timings"]["total_s"] > 0
    # volumes in the summary are the labelmap's voxel counts times the voxel volume
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    counts = np.bincount(sitk.GetArrayFromImage(labelmap).ravel(), minlength=4)
    for s in STRUCTURES:
        assert abs(summary["structures"][s.key]["volume_ml"] - counts[s.value] * voxel_ml) <= 0.01 + 0.02 * counts[s.value] * voxel_ml


def test_seg_nrrd_output_has_named_coloured_segments(cli, tmp_path, phantom_folder, tiny_model):
    import slicerio

    seg = tmp_path / "result.seg.nrrd"
    r = cli("segment", _phantom_image(phantom_folder), "--model", tiny_model, "--samples", 1, "--steps", 2,
            "--output-segmentation", seg, "--progress", "none", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    segmentation = slicerio.read_segmentation(str(seg))
    by_id = {s["id"]: s for s in segmentation["segments"]}
    assert set(by_id) == {s.key for s in STRUCTURES}
    for s in STRUCTURES:
        assert by_id[s.key]["name"] == s.name
        np.testing.assert_allclose(by_id[s.key]["color"], s.color, atol=1e-3)
        assert by_id[s.key]["terminology"]["type"][1] == s.type[1]


def test_same_seed_same_result_and_batch_size_does_not_matter(cli, tmp_path, phantom_folder, tiny_model):
    outs = []
    for i, batch in enumerate((1, 64)):
        seg = tmp_path / f"seg{i}.nii.gz"
        r = cli("segment", _phantom_image(phantom_folder), "--model", tiny_model, "--samples", 2, "--steps", 2,
                "--output-uncertainty", seg, "--batch-slices", batch, "--no-cache", "--progress", "none",
                "--device", "cpu")
        assert r.returncode == 0, r.stderr
        outs.append(sitk.GetArrayFromImage(sitk.ReadImage(str(seg))))
    # probabilities are kept as 8-bit levels per sample (see sample_cache), so another
    # batching may move a value by a level's rounding, never more
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-3)


def test_batch_folder_mode_resumes(cli, tmp_path, phantom_folder, tiny_model):
    out = tmp_path / "batch"
    args = ("segment", phantom_folder / "images", "--model", tiny_model, "--samples", 1, "--steps", 2,
            "--output-dir", out, "--progress", "none", "--device", "cpu")
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    images = sorted((phantom_folder / "images").glob("*.mha"))
    summaries = sorted(out.glob("*_summary.json"))
    assert len(summaries) == len(images)
    stamps = {p: p.stat().st_mtime_ns for p in summaries}
    victim = summaries[0]
    victim.unlink()  # as if the run had stopped before this case finished
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert victim.exists()
    for p in summaries[1:]:
        assert p.stat().st_mtime_ns == stamps[p], f"{p.name} was recomputed"


def _assert_clean_failure(r, out_dir: Path, *words: str) -> None:
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert err and err[-1].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w.lower() in err[-1].lower(), err[-1]
    assert not any(out_dir.iterdir()), f"left files behind: {list(out_dir.iterdir())}"


def test_bad_inputs_fail_cleanly(cli, tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    seg = out / "seg.nii.gz"
    flat = sitk.GetImageFromArray(np.random.default_rng(0).random((32, 32)).astype(np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    nan = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    nan[2, 3, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 32, 32), np.float32)), str(tmp_path / "zero.nii.gz"))
    cases = [
        (tmp_path / "flat.nii.gz", tiny_model, ("flat.nii.gz", "2D")),
        (tmp_path / "nan.mha", tiny_model, ("nan.mha",)),
        (tmp_path / "zero.nii.gz", tiny_model, ("zero.nii.gz", "constant")),
        (tmp_path / "missing.nii.gz", tiny_model, ("missing.nii.gz",)),
    ]
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(Path(tiny_model).read_bytes()[:2000])
    cases.append((tmp_path / "nan.mha", corrupt, ()))
    for image, model, words in cases:
        r = _cli_segment(image, model, seg)
        _assert_clean_failure(r, out, *words)


def _cli_segment(image, model, seg):
    from conftest import run_cli

    return run_cli("segment", image, "--model", model, "--samples", 1, "--steps", 2,
                   "--output-segmentation", seg, "--progress", "none", "--device", "cpu")


def test_truncated_model_is_refused_with_its_name(tmp_path, phantom_folder, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(Path(tiny_model).read_bytes()[:-500])
    r = _cli_segment(_phantom_image(phantom_folder), truncated, out / "seg.nii.gz")
    _assert_clean_failure(r, out, "truncated.zip")


def test_sigterm_cancels_cleanly_without_partial_files(tmp_path, phantom_folder, tiny_model):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "SpineSegDiffLib", "segment", str(_phantom_image(phantom_folder)),
                             "--model", str(tiny_model), "--samples", "8", "--steps", "30", "--no-cache",
                             "--output-segmentation", str(out / "seg.nii.gz"), "--progress", "json",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()  # the engine is running once it reports progress
    assert first.startswith("{"), proc.stderr.read()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: cancelled; no partial output was kept"
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_out_of_memory_retries_with_smaller_batches_and_same_result(tiny_model, capfd):
    """A network call that runs out of (GPU) memory is repeated with half the slices,
    and the ensemble comes out exactly as a run planned with that batch. The failure is real
    torch.cuda.OutOfMemoryError, raised by the encoder above a batch size, as CUDA does."""
    import torch

    from SpineSegDiffLib.inference.loading import load_model

    from SpineSegDiffLib.inference.pipeline import predict_on_grid

    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(tiny_model, "cpu")
    size = model.grid_spec.size
    slices = np.random.default_rng(0).random((6, size, size), dtype=np.float32)
    settings = SegmentSettings(samples=2, steps=2, batch_slices=6)
    # after the failures every call holds one slice, so that is what the result must equal
    expected = predict_on_grid(model, slices, SegmentSettings(samples=2, steps=2, batch_slices=1))

    encode = model.network.encode
    seen = []

    def encode_with_little_memory(image):
        seen.append(image.shape[0])
        if image.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(image)

    model.network.encode = encode_with_little_memory
    got = predict_on_grid(model, slices, settings)
    assert seen[:3] == [6, 3, 1]  # halved until it fits
    np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    np.testing.assert_array_equal(got.entropy, expected.entropy)
    assert got.network_evaluations == expected.network_evaluations  # failed calls not counted
    err = capfd.readouterr().err
    assert "out of GPU memory: retrying with 3 slice(s) per batch" in err
    assert "retrying with 1 slice(s) per batch" in err

    def encode_never_fits(image):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    model.network.encode = encode_never_fits  # one slice still fails, on the CPU: give up
    with pytest.raises(torch.cuda.OutOfMemoryError):
        predict_on_grid(model, slices, settings)
