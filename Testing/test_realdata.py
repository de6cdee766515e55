"""Real lumbar MRI with partial labels: every case loads and matches cases.csv."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY
from SpineSegDiffLib.data.realdata import (
    ENV_VARIABLE,
    default_real_folder,
    read_real_folder,
    split_train_held_out,
)


def csv_rows(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "cases.csv").open(newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_every_real_case_loads_with_the_labels_cases_csv_lists(real_data_dir):
    rows = csv_rows(real_data_dir)
    cases = read_real_folder(real_data_dir)
    assert sorted(c.case_id for c in cases) == sorted(rows)
    for case in cases:
        row = rows[case.case_id]
        assert case.set == row["set"] and case.set in {"VB1", "VB2", "VB3", "IVD"}
        is_disc_set = case.set == "IVD"
        assert case.annotated == frozenset({"discs" if is_disc_set else "vertebrae"})
        assert case.body_only is not is_disc_set
        structure_value = BY_KEY["discs" if is_disc_set else "vertebrae"].value
        assert case.annotated_labels == frozenset({structure_value})

        image, semantic = case.load()
        assert "x".join(map(str, image.GetSize())) == row["shape"], case.case_id
        for key in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
            assert getattr(semantic, key)() == getattr(image, key)(), (case.case_id, key)
        assert semantic.GetPixelID() == sitk.sitkUInt8

        # the raw mask holds exactly the instance values cases.csv lists
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask_path)))
        listed = [int(v) for v in row["labels"].split()]
        assert np.unique(raw).tolist() == [0, *listed], case.case_id
        semantic_array = sitk.GetArrayFromImage(semantic)
        assert set(np.unique(semantic_array)) == {0, structure_value}, case.case_id
        np.testing.assert_array_equal(semantic_array > 0, raw > 0)


def test_train_held_out_split_is_patient_wise_and_covers_every_set(real_data_dir):
    cases = read_real_folder(real_data_dir)
    train, held = split_train_held_out(cases)
    train_ids, held_ids = [c.case_id for c in train], [c.case_id for c in held]
    assert not set(train_ids) & set(held_ids)
    assert sorted(train_ids + held_ids) == sorted(c.case_id for c in cases)
    for name in {c.set for c in cases}:
        in_set = [c.case_id for c in cases if c.set == name]
        # cases.csv order within the set: even positions train, odd ones are held out
        assert [i for i in train_ids if i in in_set] == in_set[0::2]
        assert [i for i in held_ids if i in in_set] == in_set[1::2]
        assert in_set[1::2], f"set {name} has no held-out case"
    # another key: all cases in one group alternate
    train_one, held_one = split_train_held_out(cases, set_of=lambda case: "all")
    assert [c.case_id for c in held_one] == [c.case_id for c in cases][1::2]


def _one_case_folder(source: Path, target: Path, case_id: str) -> None:
    row = csv_rows(source)[case_id]
    for sub in ("images", "masks"):
        (target / sub).mkdir(parents=True)
        shutil.copy(source / sub / f"{case_id}.nii.gz", target / sub)
    with (target / "cases.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def test_default_folder_follows_the_environment(monkeypatch, tmp_path, real_data_dir):
    monkeypatch.delenv(ENV_VARIABLE, raising=False)
    assert default_real_folder() is None  # an installed engine assumes no checkout around it
    with pytest.raises(InputError, match=ENV_VARIABLE):
        read_real_folder()
    _one_case_folder(real_data_dir, tmp_path / "one", "IVD_11")
    monkeypatch.setenv(ENV_VARIABLE, str(tmp_path / "one"))
    assert default_real_folder() == tmp_path / "one"
    (case,) = read_real_folder()
    assert case.case_id == "IVD_11" and case.image_path.parent == tmp_path / "one" / "images"


def test_missing_folder_or_file_is_an_error_naming_it(tmp_path, real_data_dir):
    with pytest.raises(InputError, match="cases.csv"):
        read_real_folder(tmp_path / "nowhere")
    folder = tmp_path / "broken"
    _one_case_folder(real_data_dir, folder, "VB3_01")
    (folder / "masks" / "VB3_01.nii.gz").unlink()
    with pytest.raises(InputError, match=r"masks/VB3_01\.nii\.gz"):
        read_real_folder(folder)


def test_mask_on_another_grid_is_an_error_naming_both_files(tmp_path, real_data_dir):
    folder = tmp_path / "shifted"
    _one_case_folder(real_data_dir, folder, "IVD_20")
    mask_path = folder / "masks" / "IVD_20.nii.gz"
    mask = sitk.ReadImage(str(mask_path))
    mask.SetOrigin(tuple(o + 2.0 for o in mask.GetOrigin()))
    sitk.WriteImage(mask, str(mask_path))
    (case,) = read_real_folder(folder)
    with pytest.raises(InputError) as error:
        case.load()
    assert str(mask_path) in str(error.value) and str(folder / "images" / "IVD_20.nii.gz") in str(error.value)
