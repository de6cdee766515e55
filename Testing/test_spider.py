"""SPIDER-format reader: file discovery, value mapping, geometry checks, patient split."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.spider import (SEQUENCES, SpiderCase, SpiderWarning, patient_split,
                                    read_spider_folder, spider_to_semantic)

SHAPE = (6, 20, 24)  # numpy (z, y, x): small, but the MRI checks want >= 16 in-plane
# oblique, non-unit geometry so a reader that drops or swaps header fields is caught
SPACING = (3.5, 0.6, 0.7)
ORIGIN = (-12.5, 40.25, 7.0)
DIRECTION = tuple(sitk.VersorTransform((0.2, 1.0, 0.1), 0.3).GetMatrix())


def spider_mask(extra_values: tuple[int, ...] = ()) -> np.ndarray:
    """A mask holding vertebrae 1..7, canal 100, partial vertebra 103, discs 201..206."""
    values = [*range(1, 8), 100, 103, *range(201, 207), *extra_values]
    mask = np.zeros(SHAPE, dtype=np.uint16)
    flat = mask.reshape(-1)
    for i, value in enumerate(values):
        flat[i * 3:(i + 1) * 3] = value
    return mask


def write_volume(path: Path, array: np.ndarray, origin=ORIGIN, spacing=SPACING) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def write_case(folder: Path, case_id: str, mask: np.ndarray | None = None, mask_origin=ORIGIN) -> None:
    rng = np.random.default_rng(len(case_id))
    write_volume(folder / "images" / f"{case_id}.mha", rng.normal(100, 20, SHAPE).astype(np.float32))
    if mask is not None:
        write_volume(folder / "masks" / f"{case_id}.mha", mask, origin=mask_origin)


def expected_semantic(mask: np.ndarray) -> np.ndarray:
    """The SPIDER -> project mapping written out rule by rule, independent of the LUT."""
    expected = np.zeros(mask.shape, dtype=np.uint8)
    expected[mask == 100] = 1
    expected[((mask >= 1) & (mask <= 25)) | ((mask >= 101) & (mask <= 125))] = 2
    expected[(mask >= 201) & (mask <= 225)] = 3
    return expected


def test_every_spider_value_maps_to_its_structure():
    all_values = np.arange(0, 300, dtype=np.int32)
    known = np.isin(all_values, [0, 100, *range(1, 26), *range(101, 126), *range(201, 226)])
    with pytest.warns(SpiderWarning) as record:
        semantic = spider_to_semantic(all_values)
    assert semantic.dtype == np.uint8
    np.testing.assert_array_equal(semantic, expected_semantic(all_values))
    assert np.all(semantic[~known] == 0)
    assert len(record) == 1
    # NIfTI masks are often float: whole numbers map, fractions are unknown
    with pytest.warns(SpiderWarning, match="1.5"):
        semantic = spider_to_semantic(np.array([0.0, 100.0, 201.0, 1.5, np.nan]))
    assert semantic.tolist() == [0, 1, 3, 0, 0]
    # a mask holding only defined values raises no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        semantic = spider_to_semantic(spider_mask())
    np.testing.assert_array_equal(semantic, expected_semantic(spider_mask()))


def test_unknown_values_warn_with_file_and_value_and_become_background(tmp_path):
    mask = spider_mask(extra_values=(999,))
    write_case(tmp_path, "1_t2", mask)
    (case,) = read_spider_folder(tmp_path)
    with pytest.warns(SpiderWarning, match=r"1_t2\.mha.*999"):
        _, semantic, instance = case.load()
    semantic_array = sitk.GetArrayFromImage(semantic)
    assert np.all(semantic_array[mask == 999] == 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(instance), mask)  # instance values untouched


def test_folder_is_read_into_cases_with_labels_on_the_image_geometry(tmp_path, recwarn):
    mask = spider_mask()
    for case_id in ("2_t1", "2_t2", "10_t2", "10_t2_SPACE", "3_t1"):
        write_case(tmp_path, case_id, mask)
    cases = read_spider_folder(tmp_path)
    assert [c.case_id for c in cases] == ["2_t1", "2_t2", "3_t1", "10_t2", "10_t2_SPACE"]
    assert [c.patient_id for c in cases] == ["2", "2", "3", "10", "10"]
    assert {c.sequence for c in cases} == set(SEQUENCES)
    image, semantic, instance = cases[-1].load()
    assert semantic.GetPixelID() == sitk.sitkUInt8
    for label in (semantic, instance):
        assert label.GetSize() == image.GetSize()
        assert label.GetOrigin() == image.GetOrigin()
        assert label.GetSpacing() == image.GetSpacing()
        assert label.GetDirection() == image.GetDirection()
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(semantic), expected_semantic(mask))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(instance), mask)
    assert not [w for w in recwarn if issubclass(w.category, SpiderWarning)]

    only_t1 = read_spider_folder(tmp_path, sequences=["t1"])
    assert [c.case_id for c in only_t1] == ["2_t1", "3_t1"]
    with pytest.raises(InputError, match="t3"):
        read_spider_folder(tmp_path, sequences=["t3"])


def test_image_without_mask_is_an_error_naming_the_file_unless_masks_are_optional(tmp_path):
    write_case(tmp_path, "4_t1", spider_mask())
    write_case(tmp_path, "5_t2", mask=None)
    with pytest.raises(InputError, match=r"5_t2\.mha"):
        read_spider_folder(tmp_path)
    with pytest.warns(SpiderWarning, match=r"5_t2\.mha"):
        cases = read_spider_folder(tmp_path, require_masks=False)
    unlabelled = next(c for c in cases if c.case_id == "5_t2")
    assert unlabelled.mask_path is None
    image, semantic, instance = unlabelled.load()
    assert image.GetSize() == SHAPE[::-1] and semantic is None and instance is None


def test_mask_on_another_grid_is_an_error_naming_both_files(tmp_path):
    shifted = (ORIGIN[0] + SPACING[0], *ORIGIN[1:])  # one slice off
    write_case(tmp_path, "6_t2", spider_mask(), mask_origin=shifted)
    (case,) = read_spider_folder(tmp_path)
    with pytest.raises(InputError) as error:
        case.load()
    message = str(error.value)
    assert str(tmp_path / "images" / "6_t2.mha") in message
    assert str(tmp_path / "masks" / "6_t2.mha") in message


def test_unusable_folders_are_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_spider_folder(tmp_path / "nowhere")
    with pytest.raises(InputError, match="images/"):
        read_spider_folder(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no SPIDER images"):
        read_spider_folder(tmp_path)


def test_file_with_unknown_name_pattern_is_skipped_with_a_warning(tmp_path):
    write_case(tmp_path, "7_t2", spider_mask())
    write_volume(tmp_path / "images" / "scan_7_flair.mha", np.ones(SHAPE, dtype=np.float32))
    with pytest.warns(SpiderWarning, match=r"scan_7_flair\.mha"):
        cases = read_spider_folder(tmp_path)
    assert [c.case_id for c in cases] == ["7_t2"]


def test_overview_patient_ids_are_used(tmp_path):
    for case_id in ("1_t1", "1_t2", "2_t2"):
        write_case(tmp_path, case_id, spider_mask())
    # series 1 and 2 are the same person according to overview.csv
    (tmp_path / "overview.csv").write_text(
        "new_file_name,patient_id,sequence,subset\n1_t1,P7,t1,training\n1_t2,P7,t2,training\n"
        "2_t2,P7,t2,validation\n", encoding="utf-8")
    cases = read_spider_folder(tmp_path)
    assert {c.patient_id for c in cases} == {"P7"}
    assert next(c for c in cases if c.case_id == "2_t2").metadata["subset"] == "validation"
    train, val = patient_split(cases, val_fraction=0.5, seed=0)
    assert len(train) + len(val) == 3 and (not train or not val)


def _fake_cases(n_patients: int) -> list[SpiderCase]:
    # split works on ids only, so cases need no files here
    return [SpiderCase(f"{p}_{s}", str(p), s, Path(f"{p}_{s}.mha"), Path(f"{p}_{s}.mha"))
            for p in range(1, n_patients + 1) for s in SEQUENCES[: 1 + p % 3]]


def test_patient_split_never_shares_a_patient_and_is_deterministic():
    cases = _fake_cases(20)
    splits = []
    for seed in range(5):
        train, val = patient_split(cases, val_fraction=0.25, seed=seed)
        train_patients = {c.patient_id for c in train}
        val_patients = {c.patient_id for c in val}
        assert not train_patients & val_patients
        assert len(val_patients) == 5
        assert sorted(train + val, key=cases.index) == cases
        shuffled = cases[:]
        random.Random(seed).shuffle(shuffled)
        again_train, again_val = patient_split(shuffled, val_fraction=0.25, seed=seed)
        assert {c.case_id for c in again_val} == {c.case_id for c in val}
        splits.append(frozenset(val_patients))
    assert len(set(splits)) > 1  # the seed matters
    # tiny data sets still get one validation patient, and never lose all training data
    train, val = patient_split(_fake_cases(2), val_fraction=0.1, seed=0)
    assert len({c.patient_id for c in val}) == 1 and train
    train, val = patient_split(_fake_cases(3), val_fraction=0.0, seed=0)
    assert not val
    with pytest.raises(ValueError):
        patient_split(cases, val_fraction=1.0, seed=0)


@pytest.mark.filterwarnings("error::SpineSegDiffLib.data.spider.SpiderWarning")
def test_phantom_folder_reads_as_spider(tmp_path):
    from SpineSegDiffLib.data.phantom import write_spider_folder

    folder = tmp_path / "phantoms"
    write_spider_folder(folder, cases=2, seed=0)
    cases = read_spider_folder(folder)
    assert len({c.patient_id for c in cases}) == 2
    assert {c.sequence for c in cases} <= set(SEQUENCES)
    for case in cases:
        image, semantic, instance = case.load()
        assert semantic.GetSize() == image.GetSize()
        semantic_array = sitk.GetArrayFromImage(semantic)
        assert set(np.unique(semantic_array)) == {0, 1, 2, 3}
        np.testing.assert_array_equal(semantic_array, expected_semantic(sitk.GetArrayFromImage(instance)))
