"""Synthetic lumbar phantoms: determinism, anatomy, contrast, geometry, and the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import run_cli

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.phantom import REQUIRED_VERTEBRAE, generate_case, write_spider_folder
from SpineSegDiffLib.data.spider_labels import CANAL_VALUE, disc_value
from SpineSegDiffLib.data.spider_labels import VERTEBRA_VALUE_BY_NAME as VERTEBRA_VALUES

SEED = 11


@pytest.fixture(scope="module")
def case():
    return generate_case(SEED, 0)


def _arrays(c):
    return {k: sitk.GetArrayFromImage(v) for k, v in c.images.items()} | {"mask": sitk.GetArrayFromImage(c.mask)}


def test_same_seed_same_case_other_seed_other_case(case):
    again, other = _arrays(generate_case(SEED, 0)), _arrays(generate_case(SEED + 1, 0))
    first = _arrays(case)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert first["t2"].shape != other["t2"].shape or not np.array_equal(first["t2"], other["t2"])
    # one sequence alone is the same image as in the pair (own random stream per sequence)
    alone = generate_case(SEED, 0, ("t2",))
    assert list(alone.images) == ["t2"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(alone.images["t2"]), first["t2"])


def test_structures_present_and_in_anatomical_order(case):
    mask = sitk.GetArrayFromImage(case.mask)
    mid = mask[:, :, case.metadata["mid_sagittal_slice"]]  # rows superior->inferior, cols anterior->posterior
    rows, cols = np.indices(mid.shape)
    canal = mid == CANAL_VALUE
    assert canal.sum() > 500
    # vertebral bodies = vertebra pixels in front of the canal on the same row (the
    # sacrum's lower part, below the end of the thecal sac, is left out)
    front = np.where(canal, cols, mid.shape[1]).min(axis=1)[:, None]
    names = REQUIRED_VERTEBRAE  # T12 .. S1, superior first
    body_row = {}
    for name in names:
        body = (mid == VERTEBRA_VALUES[name]) & (cols < front) & (front < mid.shape[1])
        assert body.sum() > 200, f"{name} body missing in the mid-sagittal slice"
        body_row[name] = rows[body].mean()
        # level by level (the spine curves), the canal lies behind the body
        level = np.zeros(mid.shape[0], bool)
        level[rows[body].min():rows[body].max() + 1] = True
        assert cols[canal & level[:, None]].mean() > cols[body].mean() + 10, name
    for upper, lower in zip(names[:-1], names[1:]):
        disc = mid == disc_value(lower)
        assert disc.sum() > 30, f"disc {upper}/{lower} missing"
        assert body_row[upper] < rows[disc].mean() < body_row[lower]
    assert case.metadata["mid_sagittal_slice"] in range(mask.shape[2])


def test_t1_t2_contrast(case):
    mask = sitk.GetArrayFromImage(case.mask)
    t1, t2 = (sitk.GetArrayFromImage(case.images[s]).astype(float) for s in ("t1", "t2"))
    canal = mask == CANAL_VALUE
    vertebrae = (mask >= 1) & (mask <= 25)
    assert t2[canal].mean() > 1.5 * t2[vertebrae].mean()  # CSF bright on T2
    assert t1[canal].mean() < 0.7 * t1[vertebrae].mean()  # CSF dark, marrow bright on T1


def test_healthy_disc_brighter_than_degenerated_on_t2():
    for index in range(8):
        c = generate_case(SEED, index, ("t2",))
        grades = c.metadata["grades"]
        healthy = [v for v, g in grades.items() if g <= 2]
        worn = [v for v, g in grades.items() if g >= 4]
        if healthy and worn:
            break
    else:
        pytest.fail("no phantom among 8 has both a healthy and a degenerated disc")
    mask = sitk.GetArrayFromImage(c.mask)
    t2 = sitk.GetArrayFromImage(c.images["t2"]).astype(float)
    assert min(t2[mask == v].mean() for v in healthy) > max(t2[mask == v].mean() for v in worn)


def test_geometry_within_spider_ranges(case):
    for c in (case, generate_case(SEED, 1, ("t1",))):
        for image in list(c.images.values()) + [c.mask]:
            sx, sy, sz = image.GetSpacing()
            assert 3.3 <= sx <= 4.5 and 0.5 <= sy <= 0.9 and sy == pytest.approx(sz)
            assert 12 <= image.GetSize()[0] <= 20
            assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, -1)
            assert image.GetOrigin() == c.mask.GetOrigin() and image.GetSize() == c.mask.GetSize()


def test_unknown_sequence_is_refused(tmp_path):
    with pytest.raises(InputError, match="t3"):
        write_spider_folder(tmp_path / "out", 1, 0, ("t3",))
    assert not (tmp_path / "out").exists()


def test_cli_writes_spider_folder_and_preview(tmp_path):
    out, png = tmp_path / "phantoms", tmp_path / "preview.png"
    result = run_cli("phantom", "--out", out, "--cases", "2", "--seed", "5", "--preview", png)
    assert result.returncode == 0, result.stderr
    names = {f"{i}_{s}.mha" for i in (1, 2) for s in ("t1", "t2")}
    assert {f.name for f in (out / "images").iterdir()} == names
    assert {f.name for f in (out / "masks").iterdir()} == names
    image = sitk.ReadImage(str(out / "images" / "2_t1.mha"))
    mask = sitk.ReadImage(str(out / "masks" / "2_t1.mha"))
    assert image.GetSize() == mask.GetSize() and image.GetSpacing() == mask.GetSpacing()
    overview = list(csv.DictReader((out / "overview.csv").open()))
    assert len(overview) == 4
    assert {r["patient_id"] for r in overview if r["new_file_name"].startswith("1_")} == {"1"}
    assert all(int(r["num_vertebrae"]) >= 7 and int(r["num_discs"]) >= 6 and r["phantom_seed"] == "5"
               for r in overview)
    gradings = list(csv.DictReader((out / "radiological_gradings.csv").open()))
    assert {r["patient_id"] for r in gradings} == {"1", "2"}
    assert all(1 <= int(r["pfirrmann_grade"]) <= 5 and 201 <= int(r["ivd_label"]) <= 225 for r in gradings)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per case" in result.stdout and str(png) in result.stdout


def test_cli_refuses_non_empty_out_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("phantom", "--out", out, "--cases", "1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(out) in lines[0]
    assert "Traceback" not in result.stderr
    assert [f.name for f in out.iterdir()] == ["keep.txt"]
    bad = run_cli("phantom", "--out", tmp_path / "new", "--cases", "1", "--sequences", "t1,flair")
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["taken"]  # no partial or temp folder
