"""Retraining data set (nnU-Net v2 style folder): add, read back, and every refusal."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.data.dataset_format import (DATASET_FORMAT_VERSION, add_case, create_dataset,
                                            load_case, read_dataset)
from SpineSegDiffLib.core.errors import InputError

SIZE = (12, 10, 8)  # x, y, z


def make_case(seed: int, spacing=(1.0, 0.8, 3.0)) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(100, 20, SIZE[::-1]).astype(np.float32))
    label = sitk.GetImageFromArray(rng.integers(0, 4, SIZE[::-1]).astype(np.uint8))
    for img in (image, label):
        img.SetSpacing(spacing)
        img.SetOrigin((-5.0, 12.5, 3.0))
        img.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    return image, label


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "export"
    create_dataset(folder, "SpineSegDiffReviewed")
    return folder


def test_add_two_cases_and_read_back(dataset):
    cases = [make_case(1), make_case(2)]
    provenance = {"source": "scan_a.nrrd", "model_id": "spinesegdiff-demo", "model_version": "0.1.0",
                  "samples": 5, "edited_by_person": True,
                  "annotated_structures": ["vertebrae", "discs"]}
    first = add_case(dataset, *cases[0], provenance)
    second = add_case(dataset, *cases[1], {"source": "scan_b.nrrd", "edited_by_person": False})
    assert (first.case_id, second.case_id) == ("case_0001", "case_0002")
    assert first.image_path.name == "case_0001_0000.nii.gz"
    assert first.label_path == dataset / "labelsTr" / "case_0001.nii.gz"

    data = json.loads((dataset / "dataset.json").read_text())
    assert data["numTraining"] == 2
    assert data["channel_names"] == {"0": "MRI"}
    assert data["labels"] == {"background": 0, "spinal_canal": 1, "vertebrae": 2, "discs": 3}
    assert data["file_ending"] == ".nii.gz"
    assert data["spinesegdiff"]["format_version"] == DATASET_FORMAT_VERSION
    stored = data["spinesegdiff"]["cases"]["case_0001"]
    for key, value in provenance.items():
        assert stored[key] == value
    assert stored["date"]

    read = read_dataset(dataset)
    assert [c.case_id for c in read] == ["case_0001", "case_0002"]
    assert read[0].annotated == ("vertebrae", "discs")
    assert read[1].annotated == ("spinal_canal", "vertebrae", "discs")  # the default
    assert read[1].provenance["source"] == "scan_b.nrrd"
    for case, (image, label) in zip(read, cases):
        image_back, label_back = load_case(case)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image_back), sitk.GetArrayFromImage(image))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label_back), sitk.GetArrayFromImage(label))
        assert label_back.GetPixelID() == sitk.sitkUInt8
        for back in (image_back, label_back):
            np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-5)
    assert not any(name.startswith(".") or ".part" in name for name in files_in(dataset))


def test_never_overwrites_an_existing_case(dataset):
    image, label = make_case(3)
    add_case(dataset, image, label, {"source": "a"}, case_id="patient7")
    before = (dataset / "labelsTr" / "patient7.nii.gz").read_bytes()
    other_image, other_label = make_case(4)
    with pytest.raises(InputError, match="patient7.*already exists"):
        add_case(dataset, other_image, other_label, {"source": "b"}, case_id="patient7")
    assert (dataset / "labelsTr" / "patient7.nii.gz").read_bytes() == before
    # without an id, the next free one is chosen
    record = add_case(dataset, other_image, other_label, {"source": "b"})
    assert record.case_id == "case_0001"
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2
    # a case file that dataset.json does not list still blocks its id
    (dataset / "labelsTr" / "case_0002.nii.gz").write_bytes(before)
    (dataset / "imagesTr" / "case_0002_0000.nii.gz").write_bytes(before)
    assert add_case(dataset, other_image, other_label, {}).case_id == "case_0003"


def test_geometry_mismatch_is_refused_naming_what_differs(dataset):
    image, label = make_case(5)
    before = files_in(dataset)
    shifted = sitk.Image(label)
    shifted.SetOrigin((-5.0, 12.5, 3.01))
    with pytest.raises(InputError, match="origin"):
        add_case(dataset, image, shifted, {})
    respaced = sitk.Image(label)
    respaced.SetSpacing((1.0, 0.8, 2.0))
    with pytest.raises(InputError, match="spacing"):
        add_case(dataset, image, respaced, {})
    turned = sitk.Image(label)
    turned.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError, match="direction"):
        add_case(dataset, image, turned, {})
    cropped = label[:, :, :7]
    with pytest.raises(InputError, match="size"):
        add_case(dataset, image, cropped, {})
    # within tolerance (float noise from a resampler) is accepted
    nearly = sitk.Image(label)
    nearly.SetOrigin((-5.0, 12.5, 3.00001))
    add_case(dataset, image, nearly, {})
    assert len(files_in(dataset)) == len(before) + 2


def test_bad_label_values_refused_and_no_temp_files_left(dataset):
    image, label = make_case(6)
    array = sitk.GetArrayFromImage(label)
    array[0, 0, :3] = [4, 100, 201]  # SPIDER values that were not mapped to semantic labels
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(label)
    before = files_in(dataset)
    with pytest.raises(InputError, match=r"label values \[4, 100, 201\]"):
        add_case(dataset, image, bad, {})
    assert files_in(dataset) == before
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 0


def test_unjsonable_provenance_and_bad_case_id_refused(dataset):
    image, label = make_case(7)
    with pytest.raises(InputError, match="provenance"):
        add_case(dataset, image, label, {"when": object()})
    with pytest.raises(InputError, match="case id"):
        add_case(dataset, image, label, {}, case_id="../escape")
    with pytest.raises(InputError, match="annotated_structures"):
        add_case(dataset, image, label, {"annotated_structures": ["sacrum"]})
    assert files_in(dataset) == ["dataset.json"]


def test_concurrent_writers_lose_no_case(dataset):
    cases = [make_case(10 + i) for i in range(6)]
    errors = []

    def add(i):
        try:
            add_case(dataset, *cases[i], {"source": f"writer{i}"})
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    read = read_dataset(dataset)
    assert len(read) == len(cases)
    assert sorted(c.provenance["source"] for c in read) == sorted(f"writer{i}" for i in range(6))
    assert not (dataset / ".dataset.lock").exists()


def test_read_errors_are_clear(tmp_path, dataset):
    with pytest.raises(InputError, match="dataset.json not found"):
        read_dataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match="already holds a data set"):
        create_dataset(dataset, "again")
    create_dataset(dataset, "again", exist_ok=True)

    add_case(dataset, *make_case(8), {})
    (dataset / "imagesTr" / "case_0001_0000.nii.gz").unlink()
    with pytest.raises(InputError, match="case_0001_0000.nii.gz is missing"):
        read_dataset(dataset)

    data = json.loads((dataset / "dataset.json").read_text())
    data["labels"] = {"background": 0, "vertebra_L1": 1}
    (dataset / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="labels"):
        read_dataset(dataset)
    (dataset / "dataset.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        read_dataset(dataset)
    with pytest.raises(InputError, match="not valid JSON"):
        add_case(dataset, *make_case(9), {})
