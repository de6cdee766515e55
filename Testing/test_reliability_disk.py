"""A full disk: every output is verified before it gets its final name, so a write cut
short (ITK's gzip writer does not report it) leaves no file and one `error:` line.

The full disk is a real one: a 2 MiB tmpfs mounted for the test (root only; skipped
with the reason otherwise)."""

from __future__ import annotations

import errno
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from reliability_helpers import error_line, files_in, sha

FILLER = "filler.bin"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs; ``fill(leave)`` fills it up to ``leave`` free bytes."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")

    def fill(leave: int = 0) -> None:
        with open(folder / FILLER, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        size = (folder / FILLER).stat().st_size
        os.truncate(folder / FILLER, max(0, size - leave))

    try:
        yield folder, fill
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _volume(dtype=np.float32) -> sitk.Image:
    return sitk.GetImageFromArray(np.random.default_rng(0).normal(300, 60, (24, 64, 64)).astype(dtype))


@pytest.mark.parametrize("leave", [0, 8192, 65536])
@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.mha", "out.nrrd", "out.mhd"])
def test_image_write_on_a_full_disk_leaves_nothing(small_disk, name, leave):
    from SpineSegDiffLib.core.errors import SpineSegDiffError
    from SpineSegDiffLib.data.imageio import write_image

    folder, fill = small_disk
    fill(leave)
    with pytest.raises(SpineSegDiffError) as raised:
        write_image(_volume(), folder / name)
    assert "\n" not in str(raised.value) and str(folder / name) in str(raised.value)
    assert files_in(folder) == {FILLER}, "no output and no temporary file may be left"


def test_summary_and_segmentation_on_a_full_disk_leave_nothing(small_disk):
    from SpineSegDiffLib.core.errors import SpineSegDiffError
    from SpineSegDiffLib.data.outputs import write_seg_nrrd, write_summary

    folder, fill = small_disk
    fill(0)
    with pytest.raises(SpineSegDiffError):
        write_summary({"structures": {"x": list(range(5000))}}, folder / "summary.json")
    labels = sitk.GetImageFromArray((np.random.default_rng(1).random((24, 64, 64)) * 4).astype(np.uint8))
    with pytest.raises(SpineSegDiffError):
        write_seg_nrrd(labels, folder / "seg.seg.nrrd")
    assert files_in(folder) == {FILLER}


@pytest.mark.slow
def test_segment_on_a_full_disk_is_one_error_line_and_no_output(cli, small_disk, tmp_path, phantom_folder,
                                                              tiny_model):
    folder, fill = small_disk
    scan = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    before = sha(scan)
    fill(8192)  # room for a few blocks: the gzip writer starts, then is cut short
    r = cli("segment", scan, "--model", tiny_model, "--samples", 1, "--steps", 2, "--progress", "none",
            "--device", "cpu", "--no-cache", "--output-uncertainty", folder / "unc.nii.gz",
            "--output-summary", folder / "summary.json")
    line = error_line(r)
    assert "unc.nii.gz" in line
    assert files_in(folder) == {FILLER} and sha(scan) == before


def test_retraining_export_on_a_full_disk_adds_no_case(small_disk):
    from SpineSegDiffLib.core.errors import SpineSegDiffError
    from SpineSegDiffLib.data.dataset_format import add_case, create_dataset, read_dataset

    folder, fill = small_disk
    dataset = folder / "export"
    create_dataset(dataset, "Reviewed")
    fill(16384)
    before = {p.relative_to(folder) for p in folder.rglob("*")}  # the small label fits, the image is cut short
    image = _volume()
    label = sitk.GetImageFromArray((np.random.default_rng(1).random((24, 64, 64)) * 4).astype(np.uint8))
    with pytest.raises(SpineSegDiffError):
        add_case(dataset, image, label, {"source": "scan.nii.gz"})
    assert {p.relative_to(folder) for p in folder.rglob("*")} == before
    assert read_dataset(dataset) == []
