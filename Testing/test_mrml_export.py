"""Export of a reviewed segmentation into the retraining data set, with the real MRML and dataset_format."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from SpineSegDiffLib.data.dataset_format import load_case, read_dataset
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.export import export_for_training
from SpineSegDiffSlicerLib.segments import oriented_mask
from engine_fixtures import export_with_slicer, import_case, make_case, make_scene


def _imported(tmp_path, geometry="oblique"):
    case = make_case(tmp_path / "run", geometry)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    return case, kit, volume, import_case(kit, volume, case).segmentation_node


@pytest.mark.parametrize("geometry", ["oblique", "flipped"])
def test_export_round_trip_is_voxel_exact_and_unedited(tmp_path, geometry):
    case, kit, volume, segmentation = _imported(tmp_path, geometry)
    nodes_before = kit.scene.GetNumberOfNodes()
    label_path = export_for_training(kit.scene, kit.segmentations_logic, segmentation, volume,
                                     tmp_path / "dataset", {"source": "test"})
    assert kit.scene.GetNumberOfNodes() == nodes_before  # no leftover temporary nodes
    [record] = read_dataset(tmp_path / "dataset")
    assert record.label_path == label_path
    image, label = load_case(record)
    # the image is the volume node voxel for voxel, with its geometry
    expected_image = volumes.sitk_from_node(volume)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected_image))
    for what in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(image, what)(), getattr(expected_image, what)(), atol=1e-6)
    # the label is Slicer's own export of the segments, and physically the engine's file
    slicer_export = volumes.array_from_node(export_with_slicer(kit, segmentation, volume))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), slicer_export)
    on_file_grid = sitk.Resample(label, case.image, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_file_grid), case.labels)
    assert record.provenance["edited_by_person"] is False
    assert record.provenance["model_id"] == "test-model" and record.provenance["samples"] == 3
    assert record.provenance["source"] == "test"
    assert set(record.annotated) == set(BY_KEY)


def test_painting_a_segment_is_recorded_as_edited(tmp_path):
    case, kit, volume, segmentation = _imported(tmp_path)
    dims = volumes.node_dimensions(volume)
    disc = volumes.array_from_node(export_with_slicer(kit, segmentation, volume)) == BY_KEY["discs"].value
    disc[np.nonzero(disc)[0][0]] = False  # erase one slice of the disc, as a person would
    kit.segmentations_logic.SetBinaryLabelmapToSegment(
        oriented_mask(disc, volume), segmentation, "discs", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    export_for_training(kit.scene, kit.segmentations_logic, segmentation, volume, tmp_path / "dataset", {})
    [record] = read_dataset(tmp_path / "dataset")
    assert record.provenance["edited_by_person"] is True
    _, label = load_case(record)
    assert (sitk.GetArrayFromImage(label) == BY_KEY["discs"].value).sum() == disc.sum()
    assert sitk.GetArrayFromImage(label).shape == dims[::-1]


def test_deleted_segment_is_not_claimed_as_annotated(tmp_path):
    _, kit, volume, segmentation = _imported(tmp_path)
    segmentation.GetSegmentation().RemoveSegment("spinal_canal")
    export_for_training(kit.scene, kit.segmentations_logic, segmentation, volume, tmp_path / "dataset", {})
    [record] = read_dataset(tmp_path / "dataset")
    assert set(record.annotated) == {"vertebrae", "discs"}
    assert record.provenance["edited_by_person"] is True
    _, label = load_case(record)
    assert BY_KEY["spinal_canal"].value not in np.unique(sitk.GetArrayFromImage(label))


def test_segmentation_from_another_grid_is_refused_and_nothing_written(tmp_path):
    case, kit, volume, segmentation = _imported(tmp_path)
    other_image = sitk.ReadImage(str(case.image_path))
    other_image.SetSpacing([s * 1.5 for s in other_image.GetSpacing()])  # same size, other voxels
    other_path = tmp_path / "other.nii.gz"
    sitk.WriteImage(other_image, str(other_path))
    other_volume = volumes.load_volume(kit.scene, other_path)
    with pytest.raises(InputError, match="not on the voxel grid") as raised:
        export_for_training(kit.scene, kit.segmentations_logic, segmentation, other_volume,
                            tmp_path / "dataset", {})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "dataset" / "labelsTr").exists() or not any((tmp_path / "dataset" / "labelsTr").iterdir())


def test_label_checksums_match_the_definition_saved_scenes_carry():
    """Scenes saved by earlier versions carry SHA-256 of the labels cast to uint8 bytes: the
    in-place hashing must give the same digests, or every reopened case would read as edited."""
    import hashlib

    from SpineSegDiffSlicerLib import labelmaps

    def earlier(array):
        digest = hashlib.sha256(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        return digest.hexdigest()

    labels = np.random.default_rng(3).integers(0, 4, (6, 7, 9)).astype(np.uint8)
    for array in (labels, labels == 2, labels[:, ::2, 1:], (labels == 1)[::-1], labels.astype(np.int16)):
        assert labelmaps.checksum(array) == earlier(array)
    assert labelmaps.checksum(labels) != labelmaps.checksum(labels == 2)
    assert labelmaps.structure_checksums(labels) == {s: earlier(labels == v) for s, v in
                                                     (("spinal_canal", 1), ("vertebrae", 2), ("discs", 3))}
