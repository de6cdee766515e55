"""'Edit in Segment Editor': the result and its source volume in a real vtkMRMLSegmentEditorNode,
an edit through slicer-core's real vtkSlicerSegmentEditorLogic, and Export naming what was edited."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from SpineSegDiffLib.core.labels import BY_KEY
from SpineSegDiffLib.data.dataset_format import read_dataset
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.export import export_for_training
from SpineSegDiffSlicerLib.segment_editor import new_editor_node, setup_editor_node, source_volume_of
from SpineSegDiffSlicerLib.segments import oriented_mask
from SpineSegDiffSlicerLib.uncertainty_display import show_overlay
from engine_fixtures import export_with_slicer, import_case, make_case, make_scene


def _imported(tmp_path):
    case = make_case(tmp_path / "run")
    kit = make_scene()
    other = volumes.load_volume(kit.scene, case.image_path)  # a second volume: must not be picked
    volume = volumes.load_volume(kit.scene, case.image_path)
    result = import_case(kit, volume, case)
    return kit, other, volume, result


def test_editor_node_gets_the_result_and_its_own_source_volume(tmp_path):
    kit, other, volume, result = _imported(tmp_path)
    assert other.GetID() != volume.GetID()
    assert source_volume_of(result.segmentation_node) is volume
    editor = setup_editor_node(new_editor_node(kit.scene), result.segmentation_node, segment_id="discs")
    assert editor.GetSegmentationNode() is result.segmentation_node
    assert editor.GetSourceVolumeNode() is volume
    assert editor.GetSelectedSegmentID() == "discs"
    # a segment the result does not have: the first structure present instead
    result.segmentation_node.GetSegmentation().RemoveSegment("spinal_canal")
    setup_editor_node(editor, result.segmentation_node, segment_id="spinal_canal")
    assert editor.GetSelectedSegmentID() == "vertebrae"


def test_the_real_segment_editor_logic_edits_on_the_source_grid_and_export_names_the_edit(tmp_path):
    kit, _, volume, result = _imported(tmp_path)
    segmentation = result.segmentation_node
    editor = setup_editor_node(new_editor_node(kit.scene), segmentation, segment_id="discs")
    show_overlay(kit.scene, volume, result.uncertainty_node, 0.5, True)  # the module re-applies it
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(kit.scene)
    logic.SetSegmentEditorNode(editor)
    assert logic.GetSourceVolumeNode() is volume and logic.GetSegmentationNode() is segmentation
    assert logic.UpdateAlignedSourceVolume()
    aligned = logic.GetAlignedSourceVolume()
    assert tuple(aligned.GetDimensions()) == volumes.node_dimensions(volume)  # the editor works on the source grid

    disc = volumes.array_from_node(export_with_slicer(kit, segmentation, volume)) == BY_KEY["discs"].value
    erased = disc.copy()
    erased[np.nonzero(disc)[0][0]] = False  # a person erases one slice of the disc
    logic.ModifySegmentByLabelmap(segmentation, editor.GetSelectedSegmentID(), oriented_mask(erased, volume),
                                  logic.ModificationModeSet, False, True)
    composite = kit.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == result.uncertainty_node.GetID()  # overlay still shown

    export_for_training(kit.scene, kit.segmentations_logic, segmentation, volume, tmp_path / "dataset", {})
    [record] = read_dataset(tmp_path / "dataset")
    assert record.provenance["edited_by_person"] is True
    assert record.provenance["edited_structures"] == ["discs"]


def test_unedited_export_names_no_structure_and_a_result_without_source_is_refused(tmp_path):
    kit, _, volume, result = _imported(tmp_path)
    export_for_training(kit.scene, kit.segmentations_logic, result.segmentation_node, volume,
                        tmp_path / "dataset", {})
    [record] = read_dataset(tmp_path / "dataset")
    assert record.provenance["edited_structures"] == [] and record.provenance["edited_by_person"] is False
    kit.scene.RemoveNode(volume)
    with pytest.raises(ValueError, match="has no source volume in the scene"):
        setup_editor_node(new_editor_node(kit.scene), result.segmentation_node)
