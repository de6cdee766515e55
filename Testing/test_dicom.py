"""DICOM in (series folders) and DICOM SEG out: real DICOM files written by the project's own
writer from a phantom, the real CLI in a subprocess, read back with highdicom and pydicom."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.data.dicom_input import read_dicom_series
from SpineSegDiffLib.data.dicom_writer import SeriesIdentity, series_grid, write_mr_series


def _phantom_image(phantom_folder: Path) -> sitk.Image:
    return sitk.ReadImage(str(sorted((phantom_folder / "images").glob("*_t2.mha"))[0]))


def _tilted(image: sitk.Image) -> sitk.Image:
    """The phantom turned 10 degrees about an axis: an oblique acquisition."""
    out = sitk.Image(image)
    angle = np.deg2rad(10.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    out.SetDirection((turn @ np.asarray(out.GetDirection()).reshape(3, 3)).ravel().tolist())
    return out


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory, phantom_folder) -> tuple[Path, sitk.Image]:
    image = _tilted(_phantom_image(phantom_folder))
    folder = tmp_path_factory.mktemp("dicom") / "series"
    write_mr_series(image, folder)
    return folder, series_grid(image)  # the grid every DICOM reader gives the series


def _assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_written_series_reads_back_on_the_volume_grid(dicom_series):
    folder, image = dicom_series
    series = read_dicom_series(folder)
    _assert_same_grid(series.image, image)
    # the same grid as SimpleITK/GDCM's own sorting of the folder
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    _assert_same_grid(reader.Execute(), image)
    # voxels are a linear 12-bit rescaling of the volume's
    a, b = sitk.GetArrayFromImage(image).ravel(), sitk.GetArrayFromImage(series.image).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9999
    assert len(series.datasets) == image.GetSize()[2]


def test_a_left_handed_volume_comes_back_with_the_same_voxels_in_the_same_places(phantom_folder, tmp_path):
    image = _phantom_image(phantom_folder)
    flipped = sitk.Image(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    direction[:, 2] *= -1  # left- and right-handed versions of the phantom: exactly one is each
    flipped.SetDirection(direction.ravel().tolist())
    for volume in (image, flipped):
        folder = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        write_mr_series(volume, folder)
        back = read_dicom_series(folder).image
        assert np.linalg.det(np.asarray(back.GetDirection()).reshape(3, 3)) > 0
        _assert_same_grid(back, series_grid(volume))
        last = volume.GetSize()[2] - 1
        for k in (0, last):
            point = volume.TransformIndexToPhysicalPoint((3, 5, k))
            index = back.TransformPhysicalPointToIndex(point)
            np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(index), point, atol=1e-4)


def _copy_series(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _edit(path: Path, **changes) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_unusable_series_fail_with_one_clear_message(dicom_series, tmp_path):
    folder, image = dicom_series
    files = sorted(folder.glob("*.dcm"))
    middle = files[len(files) // 2]

    missing = _copy_series(folder, tmp_path / "missing")
    (missing / middle.name).unlink()
    with pytest.raises(InputError, match="missing 1 slice"):
        read_dicom_series(missing)

    uneven = _copy_series(folder, tmp_path / "uneven")
    import pydicom

    ds = pydicom.dcmread(middle)
    normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float))
    shifted = np.asarray(ds.ImagePositionPatient, float) + 0.3 * image.GetSpacing()[2] * normal
    _edit(uneven / middle.name, ImagePositionPatient=[float(v) for v in shifted])
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_dicom_series(uneven)

    mixed = _copy_series(folder, tmp_path / "mixed")
    _edit(mixed / middle.name, ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    with pytest.raises(InputError, match="mixes slice orientations"):
        read_dicom_series(mixed)

    doubled = _copy_series(folder, tmp_path / "doubled")
    shutil.copy(middle, doubled / "echo2.dcm")
    _edit(doubled / "echo2.dcm", SOPInstanceUID="1.2.3.4.5.6.7")
    with pytest.raises(InputError, match="same position"):
        read_dicom_series(doubled)


def test_several_series_are_listed_and_an_unknown_uid_is_refused(cli, dicom_series, tmp_path, tiny_model):
    folder, image = dicom_series
    two = _copy_series(folder, tmp_path / "two")
    write_mr_series(sitk.Image(image), tmp_path / "other", SeriesIdentity(series_description="second series"))
    for f in (tmp_path / "other").iterdir():
        shutil.move(f, two / f"B_{f.name}")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("segment", two, "--model", tiny_model, "--output-segmentation", out / "seg.nii.gz", "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "2 DICOM series" in line and "--series" in line
    assert "second series" in line and "SpineSegDiff phantom" in line
    r = cli("segment", two, "--series", "1.2.3", "--model", tiny_model,
            "--output-segmentation", out / "seg.nii.gz", "--device", "cpu")
    assert r.returncode == 2 and "no such series" in r.stderr and "Traceback" not in r.stderr
    assert not any(out.iterdir())


def test_dicom_outputs_need_a_dicom_input_checked_before_any_work(cli, tmp_path, phantom_folder, tiny_model):
    image_path = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]
    out = tmp_path / "out"
    out.mkdir()
    r = cli("segment", image_path, "--model", tiny_model, "--output-dicom-seg", out / "seg.dcm", "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "needs a DICOM series as input" in r.stderr.strip().splitlines()[-1]
    r = cli("segment", image_path, "--model", tiny_model, "--output-dicom-uncertainty", out / "u.dcm",
            "--device", "cpu")
    assert r.returncode == 2 and "--output-dicom-uncertainty" in r.stderr and "Traceback" not in r.stderr
    r = cli("segment", image_path, "--series", "1.2.3", "--model", tiny_model,
            "--output-segmentation", out / "seg.nii.gz", "--device", "cpu")
    assert r.returncode == 2 and "not a folder of DICOM files" in r.stderr
    assert not any(out.iterdir())


def _dciodvfy_errors(path: Path) -> list[str]:
    r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_segment_a_dicom_series_to_dicom_seg_voxel_exact(cli, dicom_series, tmp_path, tiny_model):
    import highdicom as hd
    import pydicom

    folder, image = dicom_series
    # a second series in the same folder: chosen with --series
    two = _copy_series(folder, tmp_path / "two")
    write_mr_series(sitk.Image(image), tmp_path / "other", SeriesIdentity(series_description="second series"))
    for f in (tmp_path / "other").iterdir():
        shutil.move(f, two / f"B_{f.name}")
    source = read_dicom_series(folder)
    labelmap_path, seg_path = tmp_path / "labels.nii.gz", tmp_path / "seg.dcm"
    r = cli("segment", two, "--series", source.info.uid, "--model", tiny_model, "--samples", 1, "--steps", 2,
            "--output-segmentation", labelmap_path, "--output-dicom-seg", seg_path,
            "--output-uncertainty", tmp_path / "unc.nii.gz", "--output-dicom-uncertainty", tmp_path / "unc.dcm",
            "--progress", "none", "--device", "cpu")
    assert r.returncode == 0, r.stderr

    labelmap = sitk.ReadImage(str(labelmap_path))
    _assert_same_grid(labelmap, image)  # outputs lie on the series' grid
    labels = sitk.GetArrayFromImage(labelmap)
    assert len(np.unique(labels)) > 1, "one label everywhere: the voxel check below would be weak"

    seg = hd.seg.segread(seg_path)
    source_uids = [ds.SOPInstanceUID for ds in source.datasets]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, combine_segments=True)
    np.testing.assert_array_equal(frames, labels)  # voxel-exact, slice k = source image k

    raw = pydicom.dcmread(seg_path)
    src0 = source.datasets[0]
    assert raw.SOPClassUID == pydicom.uid.SegmentationStorage and raw.Modality == "SEG"
    assert raw.FrameOfReferenceUID == src0.FrameOfReferenceUID and raw.StudyInstanceUID == src0.StudyInstanceUID
    referenced = raw.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.info.uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(source_uids)
    shared = raw.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               src0.ImageOrientationPatient, atol=1e-6)
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, src0.PixelSpacing, atol=1e-6)
    positions = {tuple(np.round(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float), 4))
                 for f in raw.PerFrameFunctionalGroupsSequence}
    assert positions == {tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 4)) for ds in source.datasets}
    assert len(raw.SegmentSequence) == len(STRUCTURES)
    for item, s in zip(raw.SegmentSequence, STRUCTURES):
        assert item.SegmentNumber == s.value and item.SegmentLabel == s.name
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert (item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                item.SegmentedPropertyCategoryCodeSequence[0].CodeValue) == (s.type[1], s.category[1])
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "SpineSegDiff" and "model" in algorithm.AlgorithmVersion

    # the uncertainty as a parametric map: float voxels equal to the NIfTI output, frame by frame
    pm = pydicom.dcmread(tmp_path / "unc.dcm")
    assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert pm.FrameOfReferenceUID == src0.FrameOfReferenceUID
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "unc.nii.gz")))
    by_position = {tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 4)): k
                   for k, ds in enumerate(source.datasets)}
    frames = pm.pixel_array
    assert frames.shape == expected.shape
    for frame, item in zip(frames, pm.PerFrameFunctionalGroupsSequence):
        k = by_position[tuple(np.round(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), 4))]
        np.testing.assert_array_equal(frame, expected[k])

    if shutil.which("dciodvfy"):  # dicom3tools, optional (Debian: apt-get install dicom3tools)
        assert _dciodvfy_errors(seg_path) == []
        assert _dciodvfy_errors(tmp_path / "unc.dcm") == []


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_written_mr_series_passes_the_dicom3tools_validator(dicom_series):
    folder, _ = dicom_series
    assert _dciodvfy_errors(sorted(folder.glob("*.dcm"))[0]) == []
