"""Outputs are checked before any work: never the input, never another output, never a
device or FIFO, an accepted extension for each kind, a writable folder; option ranges."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reliability_helpers import error_line, files_in, run_main, sha, write_mri


@pytest.fixture
def scan(tmp_path) -> Path:
    return write_mri(tmp_path / "in" / "scan.nii.gz")


def segment(cli, scan, *options):
    # the checks come before the model is loaded: the (bundled) model is never read
    return cli("segment", scan, "--progress", "none", "--device", "cpu", *options)


def in_process(_cli, scan, *options):
    return run_main("segment", scan, "--progress", "none", "--device", "cpu", *options)


def test_output_equal_to_the_input_is_refused_and_the_input_kept(cli, scan):
    before = sha(scan)
    line = error_line(segment(cli, scan, "--output-segmentation", scan))
    assert "is the input file" in line and "--output-segmentation" in line
    assert sha(scan) == before and files_in(scan.parent) == {"scan.nii.gz"}


def test_output_equal_to_the_input_through_a_hard_link_is_refused(cli, scan, tmp_path):
    link = tmp_path / "in" / "linked.nii.gz"
    os.link(scan, link)
    before = sha(scan)
    line = error_line(in_process(cli, scan, "--output-uncertainty", link))
    assert "is the input file" in line and sha(scan) == before


def test_two_outputs_on_one_file_are_refused(cli, scan, tmp_path):
    out = tmp_path / "out"
    line = error_line(segment(cli, scan, "--output-segmentation", out / "a.nii.gz",
                              "--output-uncertainty", out / "a.nii.gz"))
    assert "both write" in line and files_in(out) == set()


def test_extras_colliding_with_another_output_is_refused(cli, scan, tmp_path):
    out = tmp_path / "out"
    line = error_line(in_process(cli, scan, "--output-extras", out / "x.nii.gz",
                              "--output-uncertainty", out / "x_variance.nii.gz"))
    assert "both write" in line and files_in(out) == set()


def test_fifo_output_is_refused_and_left_alone(cli, scan, tmp_path):
    fifo = tmp_path / "out" / "pipe.nii.gz"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    line = error_line(segment(cli, scan, "--output-segmentation", fifo))
    assert "not a regular file" in line
    assert fifo.exists() and not fifo.is_file() and files_in(fifo.parent) == {"pipe.nii.gz"}


def test_device_node_output_is_refused_and_left_alone(cli, scan, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    node = tmp_path / "out" / "null.nii.gz"
    node.parent.mkdir()
    os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))  # a character device like /dev/null
    line = error_line(segment(cli, scan, "--output-uncertainty", node))
    assert "not a regular file" in line
    assert node.is_char_device()


def test_existing_folder_as_output_is_refused(cli, scan, tmp_path):
    folder = tmp_path / "out" / "seg.nii.gz"
    folder.mkdir(parents=True)
    assert "folder" in error_line(in_process(cli, scan, "--output-segmentation", folder))


@pytest.mark.parametrize("option,name", [
    ("--output-segmentation", "seg.png"), ("--output-uncertainty", "unc.txt"),
    ("--output-uncertainty", "unc.seg.nrrd"), ("--output-structure-uncertainty", "s.jpg"),
    ("--output-probabilities", "p.csv"), ("--output-extras", "e.zip"), ("--output-summary", "s.txt")])
def test_every_output_extension_is_checked_before_any_work(cli, scan, tmp_path, option, name):
    out = tmp_path / "out"
    line = error_line(in_process(cli, scan, "--output-segmentation", out / "seg.nii.gz", option, out / name))
    assert option in line
    assert "seg.nii.gz" not in files_in(out), "nothing may be written before all outputs are checked"


def test_unwritable_output_folder_is_refused_before_any_work(cli, scan, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: a read-only file system is the real case
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
    else:
        folder.chmod(0o500)
    try:
        line = error_line(segment(cli, scan, "--output-segmentation", folder / "seg.nii.gz"))
        assert "not writable" in line and files_in(folder) == set()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o700)


@pytest.mark.parametrize("option,value,expected", [
    ("--samples", "0", "--samples must be between 1 and"), ("--samples", "-2", "--samples must be between 1 and"),
    ("--samples", "100000", "--samples must be between 1 and"), ("--steps", "0", "--steps must be between 1 and"),
    ("--fused-steps", "0", "--fused-steps must be between 1 and"),
    ("--batch-slices", "-3", "--batch-slices must be between 1 and"),
    ("--batch-slices", "0", "--batch-slices must be between 1 and"), ("--seed", "-1", "--seed must be between 0 and")])
def test_option_out_of_range_is_one_error_line_naming_the_range(cli, scan, tmp_path, option, value, expected):
    out = tmp_path / "out"
    line = error_line(in_process(cli, scan, "--output-segmentation", out / "seg.nii.gz", option, value))
    assert expected in line and files_in(out) == set()


def test_fused_steps_above_steps_is_refused(cli, scan, tmp_path):
    line = error_line(in_process(cli, scan, "--output-segmentation", tmp_path / "s.nii.gz",
                              "--steps", "3", "--fused-steps", "5"))
    assert "--fused-steps must be between 1 and --steps (3)" in line
