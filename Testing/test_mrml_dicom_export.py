"""Export as DICOM SEG from the Slicer side (SpineSegDiffSlicerLib.dicom_export): a volume node that
came from a DICOM series (written by the project's own writer, its instance UIDs on the node as
Slicer's DICOM plugin records them), the result imported into a slicer-core scene, the real
`dicom-seg` engine process, and the SEG read back with highdicom voxel-exact."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES
from SpineSegDiffLib.data.dicom_input import read_dicom_series
from SpineSegDiffLib.data.dicom_writer import series_grid, write_mr_series
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.dicom_export import INSTANCE_UIDS_ATTRIBUTE, export_dicom_seg, is_from_dicom
from SpineSegDiffSlicerLib.segments import oriented_mask
from engine_fixtures import export_with_slicer, import_case, make_case, make_scene


@pytest.fixture(params=["oblique", "flipped"])  # flipped: Slicer's volume and the series index slices oppositely
def dicom_result(tmp_path, request):
    import pydicom

    case = make_case(tmp_path / "run", request.param)
    files = write_mr_series(case.image, tmp_path / "series")
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    assert not is_from_dicom(volume)
    # what Slicer's DICOM plugin leaves on a volume it loaded, and the database's file lookup
    database = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: str(f) for f in files}
    volume.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(database))
    result = import_case(kit, volume, case)
    return case, kit, volume, result, database, tmp_path


def _seg_frames(seg_path, series_folder) -> np.ndarray:
    import highdicom as hd

    uids = [ds.SOPInstanceUID for ds in read_dicom_series(series_folder).datasets]
    return hd.seg.segread(seg_path).get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                                                   combine_segments=True)


def test_a_result_on_a_dicom_volume_exports_as_a_voxel_exact_seg(dicom_result):
    import pydicom

    case, kit, volume, result, database, tmp_path = dicom_result
    assert is_from_dicom(volume)
    out = export_dicom_seg(kit.segmentations_logic, result.segmentation_node, volume, tmp_path / "seg.dcm",
                           database.get, sys.executable, REPO)
    label = sitk.GetImageFromArray(case.labels)
    label.CopyInformation(case.image)
    np.testing.assert_array_equal(_seg_frames(out, tmp_path / "series"), sitk.GetArrayFromImage(series_grid(label)))
    raw = pydicom.dcmread(out)
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == read_dicom_series(tmp_path / "series").info.uid
    assert [i.SegmentAlgorithmType for i in raw.SegmentSequence] == ["AUTOMATIC"] * len(STRUCTURES)
    assert "test-model 0.0.1" in raw.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    assert [i.SegmentedPropertyTypeCodeSequence[0].CodeValue for i in raw.SegmentSequence] == [s.type[1] for s in STRUCTURES]


def test_an_edited_structure_is_semiautomatic_and_its_edit_is_in_the_seg(dicom_result):
    import pydicom

    case, kit, volume, result, database, tmp_path = dicom_result
    segmentation = result.segmentation_node
    disc = volumes.array_from_node(export_with_slicer(kit, segmentation, volume)) == BY_KEY["discs"].value
    disc[np.nonzero(disc)[0][0]] = False
    import slicer

    kit.segmentations_logic.SetBinaryLabelmapToSegment(
        oriented_mask(disc, volume), segmentation, "discs", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    out = export_dicom_seg(kit.segmentations_logic, segmentation, volume, tmp_path / "seg.dcm",
                           database.get, sys.executable, REPO)
    kinds = {i.SegmentLabel: i.SegmentAlgorithmType for i in pydicom.dcmread(out).SegmentSequence}
    assert kinds == {s.name: "SEMIAUTOMATIC" if s.key == "discs" else "AUTOMATIC" for s in STRUCTURES}
    frames = _seg_frames(out, tmp_path / "series")
    assert (frames == BY_KEY["discs"].value).sum() == disc.sum() < (case.labels == BY_KEY["discs"].value).sum()


def test_export_needs_the_series_and_says_what_is_missing(dicom_result):
    case, kit, volume, result, database, tmp_path = dicom_result
    first = next(iter(database))
    with pytest.raises(InputError, match=f"instance {first} is not in the DICOM database"):
        export_dicom_seg(kit.segmentations_logic, result.segmentation_node, volume, tmp_path / "seg.dcm",
                         lambda uid: None if uid == first else database[uid], sys.executable, REPO)
    volume.RemoveAttribute(INSTANCE_UIDS_ATTRIBUTE)
    with pytest.raises(InputError, match="was not loaded from DICOM"):
        export_dicom_seg(kit.segmentations_logic, result.segmentation_node, volume, tmp_path / "seg.dcm",
                         database.get, sys.executable, REPO)
    assert not (tmp_path / "seg.dcm").exists()
