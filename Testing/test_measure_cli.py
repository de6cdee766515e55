"""`spinesegdiff measure` as a real subprocess on constructed segmentations: one segment per
level in a .seg.nrrd read back with slicerio, and bad input (no spine, one vertebra, no
discs, holes) giving a clear line in the summary and the table, never a made-up number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import DISC_LEVELS, VERTEBRA_LEVELS
from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("measure_cli")
    case = generate_case(21, 0, ("t2",))
    truth = sitk.GetArrayFromImage(case.mask)
    paths = {"image": folder / "t2.nii.gz", "folder": folder, "truth": truth, "reference": case.mask}
    sitk.WriteImage(case.images["t2"], str(paths["image"]))
    return paths


def _write(array: np.ndarray, phantom: dict, name: str) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(phantom["reference"])
    path = phantom["folder"] / name
    sitk.WriteImage(image, str(path))
    return path


def _measure(cli, phantom: dict, labelmap: Path, tmp_path: Path, *extra: str):
    out = {"csv": tmp_path / "m.csv", "summary": tmp_path / "s.json"}
    r = cli("measure", labelmap, "--image", phantom["image"], "--output-measurements", out["csv"],
            "--output-summary", out["summary"], *extra)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rows = list(csv.DictReader(out["csv"].open()))
    report = json.loads(out["summary"].read_text())["levels_and_measurements"]
    return r.stdout, rows, report


def test_instances_as_seg_nrrd_hold_one_segment_per_level_with_its_code(cli, phantom, tmp_path):
    import slicerio

    semantic = semantic_from_spider_values(phantom["truth"])
    labelmap = _write(semantic, phantom, "semantic.nii.gz")
    seg_path = tmp_path / "levels.seg.nrrd"
    stdout, _, report = _measure(cli, phantom, labelmap, tmp_path, "--output-instances", seg_path)
    assert "anchored at: sacrum" in stdout
    seg = slicerio.read_segmentation(str(seg_path))
    by_name = {s["name"]: s for s in seg["segments"]}
    for name in ("Spinal canal", "L1", "L4", "L5", "S1", "L4/L5 disc", "L5/S1 disc"):
        assert name in by_name, sorted(by_name)
    codes = {level.name: level.type for level in (*VERTEBRA_LEVELS, *DISC_LEVELS)}
    term = by_name["L4"]["terminology"]
    assert term["type"][1] == "51282000" and term["anatomicRegion"] == list(codes["L4"])
    assert by_name["L4/L5 disc"]["terminology"]["anatomicRegion"] == list(codes["L4/L5"])
    assert by_name["L4"]["color"] != by_name["L5"]["color"]  # neighbours told apart
    # each level's voxels are that level's truth; no segmented voxel is lost
    names = [s["name"] for s in seg["segments"]]
    voxels = slicerio.extract_segments(seg, [(n, i + 1) for i, n in enumerate(names)])["voxels"]
    voxels_zyx = np.transpose(voxels, (2, 1, 0))
    for name, spider in (("L4", 3), ("L4/L5 disc", 202), ("L1", 6)):
        mine = voxels_zyx == names.index(name) + 1
        assert (phantom["truth"][mine] == spider).mean() > 0.95, name
    assert ((voxels_zyx > 0) == (semantic > 0)).all()
    assert len(report["levels"]) >= 14


def test_bad_segmentations_say_what_was_not_measured_and_why(cli, phantom, tmp_path):
    truth = phantom["truth"]
    semantic = semantic_from_spider_values(truth)

    # no spine at all
    stdout, rows, report = _measure(cli, phantom, _write(np.zeros_like(semantic), phantom, "empty.nii.gz"),
                                    tmp_path / "empty")
    assert "warning: no spine found" in stdout and report["measurements"] == []
    assert [r["note"] for r in rows if r["measure"] == "warning"][0].startswith("no spine found")

    # one vertebra only (L3), no disc: every row says why it has no value
    stdout, rows, report = _measure(cli, phantom, _write(np.where(truth == 4, 2, 0), phantom, "one.nii.gz"),
                                    tmp_path / "one")
    assert "one vertebra only" in stdout and "no discs in view" in stdout
    assert "not measured" in stdout
    values = [r for r in rows if r["measure"] != "warning"]
    assert values and all(r["fused"] == "" and r["note"] for r in values)

    # a field of view without discs: no disc row is invented
    stdout, rows, report = _measure(cli, phantom, _write(np.where(semantic == 3, 0, semantic), phantom,
                                                         "nodiscs.nii.gz"), tmp_path / "nodiscs")
    assert "warning: no discs in view" in stdout
    assert not any(r["measure"].startswith(("disc_", "canal_")) for r in rows)
    assert any(r["measure"] == "warning" and "no discs in view" in r["note"] for r in rows)

    # a disc with a hole: measured with the hole filled, and the row says so
    holes = semantic.copy()
    disc = truth == 203
    zz, yy, _ = np.nonzero(disc)
    z, y = int(np.median(zz)), int(np.median(yy))
    box = (slice(z - 2, z + 3), slice(y - 3, y + 4), slice(None))
    holes[box][disc[box]] = 0
    stdout, rows, report = _measure(cli, phantom, _write(holes, phantom, "holes.nii.gz"), tmp_path / "holes")
    row = next(r for r in rows if r["level"] == "L3/L4" and r["measure"] == "disc_height_middle_mm")
    assert row["fused"] != "" and "holes" in row["note"]


def test_a_labelmap_that_is_not_semantic_is_a_one_line_error(cli, phantom, tmp_path):
    path = _write(np.where(phantom["truth"] > 0, 7, 0), phantom, "levels.nii.gz")
    r = cli("measure", path, "--output-measurements", tmp_path / "m.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "semantic" in r.stderr
    assert not (tmp_path / "m.csv").exists()
