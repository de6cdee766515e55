"""`spinesegdiff dicom-seg`: a labelmap on a DICOM series (written by the project's own writer
from a phantom) -> DICOM SEG through the real CLI in a subprocess, read back with highdicom
voxel-exact; the writer `segment --output-dicom-seg` uses, so the Slicer Export makes the same object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.data.dicom_input import read_dicom_series
from SpineSegDiffLib.data.dicom_writer import series_grid, write_mr_series
from SpineSegDiffLib.data.phantom import semantic_from_spider_values


@pytest.fixture(scope="module")
def series_and_labels(tmp_path_factory, phantom_folder) -> tuple[Path, sitk.Image]:
    image = sitk.ReadImage(str(sorted((phantom_folder / "images").glob("*_t2.mha"))[0]))
    mask = sitk.ReadImage(str(sorted((phantom_folder / "masks").glob("*_t2.mha"))[0]))
    folder = tmp_path_factory.mktemp("dicom_seg") / "series"
    write_mr_series(image, folder)
    semantic = sitk.GetImageFromArray(semantic_from_spider_values(sitk.GetArrayFromImage(mask)).astype(np.uint8))
    semantic.CopyInformation(mask)
    return folder, series_grid(semantic)  # the labels on the grid a DICOM reader gives the series


def _frames(seg_path: Path, folder: Path) -> np.ndarray:
    import highdicom as hd

    uids = [ds.SOPInstanceUID for ds in read_dicom_series(folder).datasets]
    seg = hd.seg.segread(seg_path)
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)


def test_labelmap_on_the_series_becomes_a_voxel_exact_seg_naming_model_and_edits(cli, series_and_labels, tmp_path):
    import pydicom

    folder, labels = series_and_labels
    expected = sitk.GetArrayFromImage(labels)
    assert set(np.unique(expected)) == {0} | {s.value for s in STRUCTURES}
    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"model": {"id": "spinesegdiff-demo", "version": "1.2.0"},
                                   "settings": {"samples": 4, "steps": 10}}))
    r = cli("dicom-seg", tmp_path / "labels.nrrd", folder, "--output", tmp_path / "seg.dcm",
            "--summary", summary, "--edited", "vertebrae")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(_frames(tmp_path / "seg.dcm", folder), expected)
    raw = pydicom.dcmread(tmp_path / "seg.dcm")
    kinds = {item.SegmentLabel: item.SegmentAlgorithmType for item in raw.SegmentSequence}
    assert kinds == {s.name: ("SEMIAUTOMATIC" if s.key == "vertebrae" else "AUTOMATIC") for s in STRUCTURES}
    algorithm = raw.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "spinesegdiff-demo 1.2.0" in algorithm.AlgorithmVersion
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == read_dicom_series(folder).info.uid


def test_a_labelmap_in_another_slice_order_is_reindexed_exactly(cli, series_and_labels, tmp_path):
    folder, labels = series_and_labels
    reversed_ = sitk.Flip(labels, [False, True, True])  # same voxels at the same places, other index order
    assert reversed_.GetDirection() != labels.GetDirection()
    sitk.WriteImage(reversed_, str(tmp_path / "labels.nii.gz"))
    r = cli("dicom-seg", tmp_path / "labels.nii.gz", folder, "-o", tmp_path / "seg.dcm")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(_frames(tmp_path / "seg.dcm", folder), sitk.GetArrayFromImage(labels))


def test_labelmaps_that_do_not_fit_the_series_fail_with_one_line(cli, series_and_labels, tmp_path):
    folder, labels = series_and_labels
    shifted = sitk.Image(labels)
    shifted.SetOrigin([o + 0.5 * s for o, s in zip(labels.GetOrigin(), labels.GetSpacing())])
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nrrd"))
    r = cli("dicom-seg", tmp_path / "shifted.nrrd", folder, "-o", tmp_path / "seg.dcm")
    assert r.returncode != 0 and "not on the DICOM series' voxel grid" in r.stderr
    assert not (tmp_path / "seg.dcm").exists()

    stray = sitk.Image(labels)
    stray[0, 0, 0] = 201  # a level value: no structure of the SEG
    sitk.WriteImage(stray, str(tmp_path / "stray.nrrd"))
    r = cli("dicom-seg", tmp_path / "stray.nrrd", folder, "-o", tmp_path / "seg.dcm")
    assert r.returncode != 0 and "values [201] that are no structure" in r.stderr

    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    r = cli("dicom-seg", tmp_path / "labels.nrrd", folder, "-o", tmp_path / "seg.dcm", "--edited", "bone")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: --edited bone")
    r = cli("dicom-seg", tmp_path / "labels.nrrd", tmp_path, "-o", tmp_path / "seg.dcm")  # no DICOM there
    assert r.returncode != 0 and "needs a DICOM series" in r.stderr


@pytest.mark.slow
def test_dicom_seg_writes_the_same_object_as_segment(cli, series_and_labels, tmp_path, tiny_model):
    """The Slicer Export path (labelmap + summary -> dicom-seg) and `segment --output-dicom-seg`
    give the same SEG: frames, segments, codes, algorithm identification, references (new UIDs aside)."""
    import pydicom

    folder, _ = series_and_labels
    labels, summary = tmp_path / "labels.nii.gz", tmp_path / "summary.json"
    r = cli("segment", folder, "--model", tiny_model, "--samples", 1, "--steps", 2, "--device", "cpu",
            "--output-segmentation", labels, "--output-summary", summary, "--output-dicom-seg", tmp_path / "a.dcm",
            "--progress", "none", "--no-cache")
    assert r.returncode == 0, r.stderr
    r = cli("dicom-seg", labels, folder, "-o", tmp_path / "b.dcm", "--summary", summary)
    assert r.returncode == 0, r.stderr
    a, b = pydicom.dcmread(tmp_path / "a.dcm"), pydicom.dcmread(tmp_path / "b.dcm")
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    assert a.pixel_array.any()
    for keyword in ("SOPClassUID", "Modality", "StudyInstanceUID", "FrameOfReferenceUID", "NumberOfFrames",
                    "SegmentationType", "SeriesDescription", "ContentLabel", "SoftwareVersions"):
        assert getattr(a, keyword) == getattr(b, keyword), keyword
    assert a.ReferencedSeriesSequence == b.ReferencedSeriesSequence
    assert a.SegmentSequence == b.SegmentSequence  # labels, codes, AUTOMATIC, algorithm name/version/parameters
    assert a.PerFrameFunctionalGroupsSequence == b.PerFrameFunctionalGroupsSequence
    assert a.SOPInstanceUID != b.SOPInstanceUID
