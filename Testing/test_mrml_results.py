"""Importing the engine's outputs into a real MRML scene (slicer-core), display and review."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.review import jump_to, review_rows
from SpineSegDiffSlicerLib.uncertainty_display import show_overlay
from SpineSegDiffSlicerLib.uncertainty_display import choose_color_node_id

from engine_fixtures import (assert_project_segments, export_with_slicer, import_case, make_case,
                             make_scene, on_file_grid, scene_state)


@pytest.mark.parametrize("geometry,suffix", [("oblique", ".nii.gz"), ("flipped", ".nrrd"),
                                             ("oblique", ".seg.nrrd"), ("flipped", ".seg.nrrd")])
def test_imported_segments_match_the_file_voxel_for_voxel(tmp_path, geometry, suffix):
    case = make_case(tmp_path, geometry, suffix)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    result = import_case(kit, volume, case)
    exported = export_with_slicer(kit, result.segmentation_node, volume)
    assert volumes.same_grid(volumes.ijk_to_ras(exported), volumes.node_dimensions(exported),
                             volumes.ijk_to_ras(volume), volumes.node_dimensions(volume))
    np.testing.assert_array_equal(on_file_grid(exported, case), case.labels)
    np.testing.assert_array_equal(on_file_grid(result.uncertainty_node, case), case.uncertainty)
    assert volumes.same_grid(volumes.ijk_to_ras(result.uncertainty_node),
                             volumes.node_dimensions(result.uncertainty_node),
                             volumes.ijk_to_ras(volume), volumes.node_dimensions(volume))


def test_segments_have_names_colours_ids_and_slicer_terminology(tmp_path):
    case = make_case(tmp_path)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    assert_project_segments(import_case(kit, volume, case).segmentation_node)


@pytest.mark.parametrize("app_color_tables,expected", [(False, "vtkMRMLPETProceduralColorNodePET-Heat"),
                                                       (True, "vtkMRMLColorTableNodeFileViridis.txt")])
def test_uncertainty_display_uses_best_available_colour_map(tmp_path, app_color_tables, expected):
    case = make_case(tmp_path)
    kit = make_scene(app_color_tables)
    assert choose_color_node_id(kit.scene) == expected
    volume = volumes.load_volume(kit.scene, case.image_path)
    display = import_case(kit, volume, case).uncertainty_node.GetDisplayNode()
    assert display.GetColorNodeID() == expected and display.GetColorNode() is not None
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)


def test_colour_choice_without_any_colour_logic_still_names_a_node_id():
    scene = slicer.vtkMRMLScene()
    assert choose_color_node_id(scene) == "vtkMRMLColorTableNodeGrey"
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    scene.RemoveNode(scene.GetNodeByID("vtkMRMLPETProceduralColorNodePET-Heat"))
    assert choose_color_node_id(scene) == "vtkMRMLColorTableNodeRainbow"


def test_rerun_replaces_segments_and_uncertainty_without_new_nodes(tmp_path):
    first = make_case(tmp_path / "first")
    second = make_case(tmp_path / "second", shift=3, seed=1)  # canal moved, new uncertainty
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, first.image_path)
    result1 = import_case(kit, volume, first)
    node_ids = sorted(node_id for node_id, _ in scene_state(kit.scene))
    result2 = import_case(kit, volume, second)
    assert sorted(node_id for node_id, _ in scene_state(kit.scene)) == node_ids
    assert result2.segmentation_node is result1.segmentation_node
    assert result2.uncertainty_node is result1.uncertainty_node
    assert result2.segmentation_node.GetSegmentation().GetNumberOfSegments() == len(STRUCTURES)
    exported = export_with_slicer(kit, result2.segmentation_node, volume)
    np.testing.assert_array_equal(on_file_grid(exported, first), second.labels)
    np.testing.assert_array_equal(on_file_grid(result2.uncertainty_node, first), second.uncertainty)


def test_second_volume_gets_its_own_result_nodes(tmp_path):
    case = make_case(tmp_path)
    kit = make_scene()
    volume_a = volumes.load_volume(kit.scene, case.image_path, name="a")
    volume_b = volumes.load_volume(kit.scene, case.image_path, name="b")
    result_a, result_b = import_case(kit, volume_a, case), import_case(kit, volume_b, case)
    assert result_a.segmentation_node is not result_b.segmentation_node
    assert result_a.uncertainty_node is not result_b.uncertainty_node
    assert kit.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


@pytest.mark.parametrize("broken", ["uncertainty", "segmentation", "seg_nrrd", "summary", "grid"])
def test_failed_import_leaves_the_scene_exactly_as_before(tmp_path, broken):
    good = make_case(tmp_path / "good")
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, good.image_path)
    import_case(kit, volume, good)  # earlier results present: they must survive untouched
    bad = make_case(tmp_path / "bad", segmentation_suffix=".seg.nrrd" if broken == "seg_nrrd" else ".nii.gz")
    if broken == "uncertainty":
        bad.uncertainty_path.write_bytes(bad.uncertainty_path.read_bytes()[:200])  # truncated file
    elif broken in ("segmentation", "seg_nrrd"):
        bad.segmentation_path.write_bytes(b"NRRD0004\ngarbage\n" if broken == "seg_nrrd" else b"not an image")
    elif broken == "summary":
        bad.summary_path.write_text("{ not json")
    else:  # outputs of another volume: same size, other spacing
        other = make_case(tmp_path / "other")
        image = sitk.ReadImage(str(other.uncertainty_path))
        image.SetSpacing([2 * v for v in image.GetSpacing()])
        sitk.WriteImage(image, str(bad.uncertainty_path))
    before = scene_state(kit.scene)
    with pytest.raises(InputError) as raised:
        import_case(kit, volume, bad)
    assert "\n" not in str(raised.value)
    assert scene_state(kit.scene) == before


def test_review_rows_sorted_most_uncertain_first_with_ras_peaks(tmp_path):
    case = make_case(tmp_path)
    rows = review_rows(case.summary)
    assert [r.mean_uncertainty for r in rows] == sorted((r.mean_uncertainty for r in rows), reverse=True)
    for row in rows:
        lps = case.summary["structures"][row.key]["peak_uncertainty_lps"]
        np.testing.assert_allclose(row.peak_ras, (-lps[0], -lps[1], lps[2]))
        assert row.name == BY_KEY[row.key].name
    with pytest.raises(InputError):
        review_rows({"structures": {"discs": {"mean_uncertainty": "high"}}})


def test_jump_to_centres_every_slice_view_on_the_peak(tmp_path):
    case = make_case(tmp_path)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    row = import_case(kit, volume, case).review_rows[0]
    jump_to(kit.scene, row.peak_ras)
    for i in range(kit.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        matrix = kit.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetSliceToRAS()
        np.testing.assert_allclose([matrix.GetElement(r, 3) for r in range(3)], row.peak_ras, atol=1e-9)
    # the peak RAS point is the voxel the summary named: inside its structure in the volume
    ijk = np.linalg.solve(volumes.ijk_to_ras(volume), [*row.peak_ras, 1.0])[:3]
    i, j, k = np.round(ijk).astype(int)
    labels_on_node = volumes.array_on_grid(case.labels, volumes.sitk_ijk_to_ras(case.image),
                                           volumes.ijk_to_ras(volume), volumes.node_dimensions(volume))
    assert labels_on_node[k, j, i] == BY_KEY[row.key].value


def test_overlay_sets_every_slice_view_and_hides_with_zero_opacity(tmp_path):
    case = make_case(tmp_path)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    uncertainty = import_case(kit, volume, case).uncertainty_node
    composites = [kit.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    show_overlay(kit.scene, volume, uncertainty, opacity=0.4, visible=True)
    for c in composites:
        assert (c.GetBackgroundVolumeID(), c.GetForegroundVolumeID()) == (volume.GetID(), uncertainty.GetID())
        assert c.GetForegroundOpacity() == pytest.approx(0.4)
    show_overlay(kit.scene, volume, uncertainty, opacity=0.4, visible=False)
    assert all(c.GetForegroundOpacity() == 0 and c.GetBackgroundVolumeID() == volume.GetID() for c in composites)


def test_results_are_tied_to_their_source_volume_and_study(tmp_path):
    """The Segment Editor finds the source volume through the reference-geometry node
    reference; DICOM export and the Data module find the results under the input's study."""
    case = make_case(tmp_path)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(kit.scene)
    volume_item = hierarchy.GetItemByDataNode(volume) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), volume)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    hierarchy.SetItemParent(volume_item, study)
    result = import_case(kit, volume, case)
    seg = result.segmentation_node
    assert seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    for node in (seg, result.uncertainty_node):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study


def test_rerun_updates_segments_in_place_in_a_shared_layer_and_keeps_a_persons_segment(tmp_path):
    """The slider's re-import updates the structures' segments where they are, also when Slicer
    keeps them in one shared labelmap layer with a segment a person painted: that segment keeps
    its voxels, a structure the new run did not find is emptied, names and colours are the project's."""
    import vtk

    from SpineSegDiffSlicerLib.segments import oriented_mask

    first = make_case(tmp_path / "first")
    third = make_case(tmp_path / "third", shift=3, seed=1)
    labels = third.labels.copy()
    labels[labels == BY_KEY["discs"].value] = 0  # this run finds no disc
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(third.image)
    sitk.WriteImage(label_image, str(third.segmentation_path))
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, first.image_path)
    node = import_case(kit, volume, first).segmentation_node
    segmentation = node.GetSegmentation()
    # a person's own segment, painted where the first run put the canal
    first_export = export_with_slicer(kit, node, volume)
    own = on_file_grid(first_export, first) == BY_KEY["spinal_canal"].value
    own_on_volume = volumes.array_from_node(first_export) == BY_KEY["spinal_canal"].value
    segmentation.AddEmptySegment("own", "my region", [0.1, 0.2, 0.3])
    kit.segmentations_logic.SetBinaryLabelmapToSegment(oriented_mask(own_on_volume, volume), node, "own",
                                                       slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    segmentation.GetSegment("discs").SetName("renamed by a person")
    segmentation.GetSegment("discs").SetColor(1.0, 1.0, 1.0)
    segmentation.CollapseBinaryLabelmaps(True)  # one shared layer, as Slicer's editor can leave them
    assert segmentation.GetNumberOfLayers() == 1 and len(segmentation.GetSegmentIDsForLayer(0)) == 4
    order = list(segmentation.GetSegmentIDs())
    node.GetDisplayNode().SetSegmentVisibility("vertebrae", False)  # a person hid a structure
    assert node.CreateClosedSurfaceRepresentation()  # what the 3D view shows

    def canal_surface_bounds():
        surface = vtk.vtkPolyData()
        node.GetClosedSurfaceRepresentation("spinal_canal", surface)
        return surface.GetBounds()

    bounds_before = canal_surface_bounds()
    assert import_case(kit, volume, third).segmentation_node is node
    assert segmentation.ContainsRepresentation("Closed surface")
    assert not np.allclose(canal_surface_bounds(), bounds_before, atol=0.5)  # the surface follows the new canal
    assert list(segmentation.GetSegmentIDs()) == order
    assert not node.GetDisplayNode().GetSegmentVisibility("vertebrae")
    np.testing.assert_array_equal(on_file_grid(export_with_slicer(kit, node, volume), first), labels)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue("own")
    own_after = slicer.vtkMRMLLabelMapVolumeNode()
    kit.scene.AddNode(own_after)
    assert kit.segmentations_logic.ExportSegmentsToLabelmapNode(node, ids, own_after, volume,
                                                                slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    np.testing.assert_array_equal(on_file_grid(own_after, first) > 0, own)
    discs = segmentation.GetSegment("discs")
    assert discs.GetName() == BY_KEY["discs"].name
    np.testing.assert_allclose(discs.GetColor(), BY_KEY["discs"].color, atol=1e-6)
