"""`segment --output-instances / --output-measurements`: real subprocess, tiny model, real files;
and the per-sample masks the measurement spread comes from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.inference.fusion import fuse_samples
from SpineSegDiffLib.inference.postprocess import clean_masks, to_labelmap
from SpineSegDiffLib.inference.sample_masks import sample_labelmaps


def _phantom_image(phantom_folder: Path) -> Path:
    return sorted((phantom_folder / "images").glob("*_t2.mha"))[0]


def test_one_sample_mask_is_the_fused_mask_of_that_sample_alone():
    rng = np.random.default_rng(0)
    levels = [rng.integers(0, 256, (3, 4, 3, 16, 16), dtype=np.uint8) for _ in range(2)]
    masks = sample_labelmaps(levels, 3, 1.0, 3.0)
    assert len(masks) == 2 and masks[0].shape == (4, 16, 16)
    for sample, mask in zip(levels, masks):
        alone = fuse_samples([sample], 3).probabilities  # the ensemble fusion with one member
        expected = to_labelmap(clean_masks(alone > 0.5, 1.0, 3.0), alone)
        np.testing.assert_array_equal(mask, expected)
    assert not np.array_equal(masks[0], masks[1])


def test_segment_writes_levels_and_measurements_without_changing_the_segmentation(cli, tmp_path, phantom_folder,
                                                                                   tiny_model):
    image_path = _phantom_image(phantom_folder)
    common = ("segment", image_path, "--model", tiny_model, "--samples", 2, "--steps", 2,
              "--device", "cpu", "--progress", "none", "--no-cache")
    plain = cli(*common, "--output-segmentation", tmp_path / "plain.nii.gz")
    assert plain.returncode == 0, plain.stderr
    out = {k: tmp_path / name for k, name in (("seg", "seg.nii.gz"), ("inst", "levels.nii.gz"),
                                              ("csv", "m.csv"), ("plot", "m.png"), ("summary", "s.json"))}
    r = cli(*common, "--output-segmentation", out["seg"], "--output-instances", out["inst"],
            "--output-measurements", out["csv"], "--output-measurements-plot", out["plot"],
            "--output-summary", out["summary"])
    assert r.returncode == 0, r.stderr
    # asking for measurements does not change the fused result
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out["seg"]))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain.nii.gz"))))
    image, instances = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(out["inst"]))
    assert instances.GetSize() == image.GetSize()
    np.testing.assert_allclose(instances.GetDirection(), image.GetDirection(), atol=1e-6)
    values = set(int(v) for v in np.unique(sitk.GetArrayFromImage(instances)))
    assert values <= {0, 100} | set(range(1, 26)) | set(range(101, 126)) | set(range(201, 226))
    # instances cover exactly the segmented voxels
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out["seg"])))
    inst = sitk.GetArrayFromImage(instances)
    assert ((inst == 100) == (seg == 1)).all()
    summary = json.loads(out["summary"].read_text())
    report = summary["levels_and_measurements"]
    assert report["samples"] == 2 and summary["timings"]["measure_s"] > 0
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == len(report["measurements"]) + len(report["warnings"])
    for row in rows:  # a value or a reason, never neither
        assert row["fused"] != "" or row["note"] != ""
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_measurement_outputs_fail_before_any_work(cli, tmp_path, phantom_folder, tiny_model):
    image_path = _phantom_image(phantom_folder)
    for option, name in (("--output-measurements", "m.xlsx"), ("--output-instances", "levels.png")):
        r = cli("segment", image_path, "--model", tiny_model, "--samples", 1, "--steps", 1, "--device", "cpu",
                "--progress", "none", option, tmp_path / name, "--output-summary", tmp_path / "s.json")
        assert r.returncode == 2
        assert r.stderr.strip().splitlines()[-1].startswith("error: ") and option in r.stderr
        assert "Traceback" not in r.stderr
        assert not any(tmp_path.iterdir())


def test_level_segments_split_the_seg_nrrd_by_level_and_keep_every_voxel(cli, tmp_path, phantom_folder, tiny_model):
    import slicerio

    image_path = _phantom_image(phantom_folder)
    common = ("segment", image_path, "--model", tiny_model, "--samples", 2, "--steps", 2,
              "--device", "cpu", "--progress", "none", "--no-cache")
    r = cli(*common, "--output-segmentation", tmp_path / "levels.seg.nrrd", "--level-segments",
            "--output-instances", tmp_path / "levels.nii.gz", "--output-summary", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    seg = slicerio.read_segmentation(str(tmp_path / "levels.seg.nrrd"))
    names = [s["name"] for s in seg["segments"]]
    voxels = np.transpose(slicerio.extract_segments(seg, [(n, i + 1) for i, n in enumerate(names)])["voxels"],
                          (2, 1, 0))
    instances = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "levels.nii.gz")))
    report = json.loads((tmp_path / "s.json").read_text())["levels_and_measurements"]
    # the tiny model is not the one the intervals were calibrated with: the report says so
    assert any("calibrated intervals were fitted with spinesegdiff-demo" in w for w in report["warnings"])
    # the printed summary says what could not be measured and why
    assert "levels (anchored at:" in r.stdout
    for row in report["not_measured"]:
        assert f"): {row['why']}" in r.stdout
    # one segment per level the report names, each exactly that level's voxels
    for level in report["levels"]:
        name = level["name"] + (" disc" if level["kind"] == "disc" else "") + (" (partial)" if level["partial"] else "")
        assert name in names, (name, names)
        np.testing.assert_array_equal(voxels == names.index(name) + 1, instances == level["value"])
    # the same voxels as the plain segmentation: nothing lost where a piece got no level
    plain = cli(*common, "--output-segmentation", tmp_path / "plain.nii.gz")
    assert plain.returncode == 0, plain.stderr
    assert ((voxels > 0) == (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain.nii.gz"))) > 0)).all()
    # a labelmap cannot hold named segments: a clear error before any work
    bad = cli(*common, "--output-segmentation", tmp_path / "x.nii.gz", "--level-segments")
    assert bad.returncode == 2 and "--level-segments" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.nii.gz").exists()
