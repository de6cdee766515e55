"""`spinesegdiff segment FOLDER --part I/N`: parts as real subprocesses cover every case once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.cli.batch import parse_part, select_cases, select_part
from SpineSegDiffLib.core.errors import InputError


def test_parts_split_any_list_without_overlap_and_cover_it():
    for n_cases in (0, 1, 5, 12):
        cases = [f"case{i:02d}" for i in range(n_cases)]
        for count in (1, 2, 3, 7):
            shares = [select_part(cases, i, count) for i in range(1, count + 1)]
            flat = [c for share in shares for c in share]
            assert sorted(flat) == cases and len(flat) == len(set(flat))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert select_cases(["a", "b"], None) == ["a", "b"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "1", "-1/2", ""])
def test_bad_part_is_refused_with_the_fix(text):
    with pytest.raises(InputError, match="--part"):
        parse_part(text)


def _small_volume(path: Path, seed: int) -> None:
    """A small non-constant volume: enough for the tiny model, fast on two cores."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.random((40, 48, 6)).astype(np.float32))
    image.SetSpacing((4.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))


@pytest.mark.slow
def test_two_parts_in_separate_processes_cover_the_folder_once_and_resume(cli, tmp_path, tiny_model):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(5):
        _small_volume(folder / f"case{i}.nii.gz", i)
    common = ("--model", tiny_model, "--samples", 1, "--steps", 2, "--progress", "none", "--device", "cpu")
    done = {}
    for part in ("1/2", "2/2"):
        out = tmp_path / f"part{part[0]}"
        r = cli("segment", folder, "--output-dir", out, "--part", part, *common)
        assert r.returncode == 0, r.stderr
        done[part] = {p.name.removesuffix("_summary.json") for p in out.glob("*_summary.json")}
    assert done["1/2"] and done["2/2"]
    assert done["1/2"].isdisjoint(done["2/2"])
    assert done["1/2"] | done["2/2"] == {f"case{i}" for i in range(5)}
    # resumable: the same part again recomputes nothing
    out = tmp_path / "part1"
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    r = cli("segment", folder, "--output-dir", out, "--part", "1/2", *common)
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_part_outside_batch_mode_is_refused(cli, tmp_path, tiny_model):
    image = tmp_path / "one.nii.gz"
    _small_volume(image, 0)
    r = cli("segment", image, "--part", "1/2", "--model", tiny_model, "--output-segmentation",
            tmp_path / "seg.nii.gz", "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--part" in r.stderr.strip().splitlines()[-1] and not (tmp_path / "seg.nii.gz").exists()
