"""Damaged or misleading image files are refused with one line before any work: truncated
files (every format), header-only files, NaN/Inf voxels in NIfTI, sheared grids."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from reliability_helpers import error_line, files_in, run_main, sha, write_mri


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def refused(path: Path, tmp_path: Path, run=run_main) -> str:
    """Segmenting ``path`` fails with one line, leaves it unchanged and writes nothing."""
    before = sha(path)
    out = tmp_path / "out"
    line = error_line(run("segment", path, "--progress", "none", "--device", "cpu",
                          "--output-segmentation", out / "seg.nii.gz", "--output-summary", out / "s.json"))
    assert sha(path) == before
    assert files_in(out) == set(), "nothing may be written for a refused input"
    return line


def test_truncated_nifti_gz_is_refused(cli, tmp_path):
    scan = write_mri(tmp_path / "scan.nii.gz")
    truncate(scan)
    line = refused(scan, tmp_path, run=cli)  # a real subprocess for the headline case
    assert "incomplete" in line and "truncated" in line and str(scan) in line


@pytest.mark.parametrize("name", ["scan.nii", "scan.mha", "scan.nrrd", "scan_raw.nrrd", "scan_raw.mha"])
def test_truncated_file_of_every_format_is_refused(tmp_path, name):
    scan = tmp_path / name
    image = sitk.GetImageFromArray(np.random.default_rng(1).normal(300, 60, (24, 40, 40)).astype(np.float32))
    sitk.WriteImage(image, str(scan), useCompression="raw" not in name)
    truncate(scan)
    assert "incomplete" in refused(scan, tmp_path)


def test_mhd_with_truncated_data_file_is_refused(tmp_path):
    scan = tmp_path / "scan.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(1).normal(300, 60, (24, 40, 40))
                                           .astype(np.float32)), str(scan), useCompression=True)
    data_file = next(p for p in tmp_path.iterdir() if p.suffix in (".raw", ".zraw"))
    truncate(data_file)
    assert "incomplete" in refused(scan, tmp_path)


def _nifti_with(tmp_path: Path, name: str, patch) -> Path:
    """A valid NIfTI written by ITK, then one header field changed with ``patch(bytearray)``."""
    scan = write_mri(tmp_path / "base.nii")
    data = bytearray(scan.read_bytes())
    data = patch(data)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def test_header_only_nifti_is_refused_from_its_header(tmp_path):
    def header_only(data: bytearray) -> bytearray:
        data[40:56] = struct.pack("<8h", 3, 600, 600, 600, 1, 1, 1, 1)
        return data[:352]  # the header and nothing else

    line = refused(_nifti_with(tmp_path, "empty.nii", header_only), tmp_path)
    assert "header only" in line and "constant" not in line


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_voxels_in_nifti_are_refused(tmp_path, value, word):
    array = np.random.default_rng(2).normal(300, 60, (24, 40, 40)).astype(np.float32)
    array[5, 6, 7] = value
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(scan))  # ITK would read the value back as 0
    line = refused(scan, tmp_path)
    assert "not finite" in line and word in line


def test_sheared_nifti_grid_is_refused_not_replaced(tmp_path):
    def shear(data: bytearray) -> bytearray:
        srow = list(struct.unpack("<12f", data[280:328]))
        srow[1] = 0.3  # x depends on j: axes no longer perpendicular
        data[280:328] = struct.pack("<12f", *srow)
        data[254:256] = struct.pack("<h", 2)  # sform_code: aligned
        return data

    line = refused(_nifti_with(tmp_path, "sheared.nii", shear), tmp_path)
    assert "sheared" in line


def test_non_orthonormal_direction_is_refused(tmp_path):
    image = sitk.GetImageFromArray(np.random.default_rng(3).normal(300, 60, (24, 40, 40)).astype(np.float32))
    image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    scan = tmp_path / "sheared.mha"
    sitk.WriteImage(image, str(scan))
    assert "not orthonormal" in refused(scan, tmp_path)


@pytest.mark.slow
def test_extreme_anisotropy_warns_instead_of_a_silent_result(cli, tmp_path, tiny_model):
    scan = write_mri(tmp_path / "slab.nii.gz", size=(5, 64, 64), spacing=(0.1, 0.1, 50.0))
    before = sha(scan)
    r = cli("segment", scan, "--model", tiny_model, "--samples", 1, "--steps", 2, "--progress", "none",
            "--device", "cpu", "--output-segmentation", tmp_path / "seg.nii.gz")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert any("times longer along one axis" in w for w in warnings), r.stderr
    assert sha(scan) == before
