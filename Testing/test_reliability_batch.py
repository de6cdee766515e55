"""Batch mode never reads its own results or temporary files as inputs, and removes the
leftovers of a killed run; two inputs that would write the same outputs are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from reliability_helpers import error_line, files_in, run_main, sha


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_output_dir_equal_to_input_folder_never_segments_its_outputs(cli, tmp_path, phantom_folder, tiny_model):
    folder = tmp_path / "batch"
    folder.mkdir()
    scan = folder / "case1.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(sorted((phantom_folder / "images").glob("*_t2.mha"))[0])), str(scan))
    before = sha(scan)
    # what a run killed with -9 in the middle of a write leaves behind: a hidden temporary file
    leftover = folder / f".case1_uncertainty.nii.gz.{_dead_pid()}.abcd1234.part.nii.gz"
    leftover.write_bytes(scan.read_bytes()[:1000])
    args = ("segment", folder, "--output-dir", folder, "--model", tiny_model, "--samples", 1, "--steps", 2,
            "--progress", "none", "--device", "cpu")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert not leftover.exists(), "the killed run's temporary file must be removed"
    assert files_in(folder) == {"case1.nii.gz", "case1.seg.nrrd", "case1_uncertainty.nii.gz",
                                "case1_summary.json"}
    summary = json.loads((folder / "case1_summary.json").read_text())
    assert summary["input"].endswith("case1.nii.gz")
    # a second run with new inputs beside the old results: only the new image is read
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(folder / "case2.nii.gz"))
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert files_in(folder) == {"case1.nii.gz", "case1.seg.nrrd", "case1_uncertainty.nii.gz",
                                "case1_summary.json", "case2.nii.gz", "case2.seg.nrrd",
                                "case2_uncertainty.nii.gz", "case2_summary.json"}
    assert sha(scan) == before


def test_temporary_file_of_a_live_writer_is_neither_input_nor_removed(tmp_path):
    from SpineSegDiffLib.cli.segment import batch_inputs
    from SpineSegDiffLib.core.atomic import remove_stale_parts

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(b"x")
    live = folder / f".b.nii.gz.{os.getppid()}.zz.part.nii.gz"  # our parent runs
    live.write_bytes(b"y")
    dead = folder / f".c.nii.gz.{_dead_pid()}.zz.part.nii.gz"
    dead.write_bytes(b"z")
    assert batch_inputs(folder, folder) == [folder / "a.nii.gz"]
    assert remove_stale_parts(folder) == [dead]
    assert live.exists() and not dead.exists()


def test_two_inputs_writing_the_same_outputs_are_refused_before_any_work(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((20, 32, 32)).astype(np.float32))
    sitk.WriteImage(image, str(folder / "case.nii.gz"))
    sitk.WriteImage(image, str(folder / "case.mha"))
    out = tmp_path / "out"
    line = error_line(run_main("segment", folder, "--output-dir", out, "--progress", "none"))
    assert "would both write" in line and files_in(out) == set()


def test_next_write_of_an_output_removes_its_dead_writers_leftover(tmp_path):
    from SpineSegDiffLib.core.atomic import write_text

    stale = tmp_path / f".summary.json.{_dead_pid()}.q1w2e3.part"
    other = tmp_path / f".other.json.{_dead_pid()}.q1w2e3.part"
    live = tmp_path / f".summary.json.{os.getppid()}.r4t5y6.part"
    for p in (stale, other, live):
        p.write_text("partial")
    write_text(tmp_path / "summary.json", "{}\n")
    assert files_in(tmp_path) == {"summary.json", other.name, live.name}
