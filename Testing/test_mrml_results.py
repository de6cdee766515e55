"""Importing the engine's outputs into a real MRML scene (slicer-core), display and review."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from scipy.spatial.transform import Rotation

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES, TERMINOLOGY_CONTEXT
from SpineSegDiffLib.data.outputs import write_seg_nrrd
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.results import import_results
from SpineSegDiffSlicerLib.review import jump_to, review_rows
from SpineSegDiffSlicerLib.uncertainty_display import show_overlay
from SpineSegDiffSlicerLib.uncertainty_display import choose_color_node_id

GEOMETRIES = {
    "oblique": (Rotation.from_euler("xyz", [17, -12, 29], degrees=True).as_matrix(), (0.65, 0.9, 3.3)),
    "flipped": (np.diag([1.0, 1.0, -1.0]), (3.5, 0.8, 0.7)),  # left-handed, like the real data
}
SHAPE = (9, 20, 24)  # (k, j, i) as numpy indexes a SimpleITK array


@dataclass
class Case:
    image_path: Path
    segmentation_path: Path
    uncertainty_path: Path
    summary_path: Path
    image: sitk.Image
    labels: np.ndarray  # (k, j, i) as in the files
    uncertainty: np.ndarray
    summary: dict


def _geometry(image: sitk.Image, geometry: str, origin=(14.5, -30.25, 8.0)) -> sitk.Image:
    direction, spacing = GEOMETRIES[geometry]
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(np.asarray(direction).ravel().tolist())
    return image


def make_labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:7, 3:17, 4 + shift:7 + shift] = 1  # canal: a column
    labels[1:8, 2:7, 10:18] = 2  # two vertebrae
    labels[1:8, 12:17, 10:18] = 2
    labels[2:7, 8:11, 11:17] = 3  # the disc between them
    return labels


def make_case(folder: Path, geometry: str = "oblique", segmentation_suffix: str = ".nii.gz",
              shift: int = 0, seed: int = 0) -> Case:
    """Engine-like outputs on the input's exact geometry, with a contract-shaped summary."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = _geometry(sitk.GetImageFromArray(rng.normal(300, 50, SHAPE).astype(np.int16)), geometry)
    labels = make_labels(shift)
    uncertainty = rng.uniform(0, 1, SHAPE).astype(np.float32)
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    uncertainty_image = sitk.GetImageFromArray(uncertainty)
    uncertainty_image.CopyInformation(image)
    paths = (folder / "mri.nii.gz", folder / f"seg{segmentation_suffix}", folder / "unc.nii.gz",
             folder / "summary.json")
    sitk.WriteImage(image, str(paths[0]))
    if segmentation_suffix == ".seg.nrrd":
        write_seg_nrrd(label_image, paths[1])  # the engine's own writer
    else:
        sitk.WriteImage(label_image, str(paths[1]))
    sitk.WriteImage(uncertainty_image, str(paths[2]))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    structures = {}
    for s in STRUCTURES:
        mask = labels == s.value
        k, j, i = np.unravel_index(np.argmax(np.where(mask, uncertainty, -1)), SHAPE)
        structures[s.key] = {"label": s.value, "name": s.name, "volume_ml": mask.sum() * voxel_ml,
                             "mean_uncertainty": float(uncertainty[mask].mean()),
                             "peak_uncertainty_lps": list(image.TransformIndexToPhysicalPoint(
                                 (int(i), int(j), int(k))))}
    summary = {"version": 1, "input": str(paths[0]), "model": {"id": "test-model", "version": "0.0.1"},
               "settings": {"samples": 3, "steps": 2, "fused_steps": 2, "device": "cpu"},
               "timings": {"total_s": 1.0}, "structures": structures}
    paths[3].write_text(json.dumps(summary))
    return Case(*paths, image, labels, uncertainty, summary)


@dataclass
class SceneKit:
    scene: slicer.vtkMRMLScene
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic
    color_logic: object  # kept so the logic lives as long as the scene


def make_scene(app_color_tables: bool = False) -> SceneKit:
    """A scene as slicer-core gives it: default (procedural) colours, three slice views.

    ``app_color_tables`` adds a colour table with the ID the Slicer application gives
    its file-based Viridis table, which slicer-core does not load.
    """
    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)  # adds the default colour nodes
    if app_color_tables:
        viridis = slicer.vtkMRMLColorTableNode()
        viridis.SetTypeToUser()
        viridis.SetSingletonTag("FileViridis.txt")  # -> ID vtkMRMLColorTableNodeFileViridis.txt
        scene.AddNode(viridis)
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    for name in ("Red", "Yellow", "Green"):
        slice_node = slicer.vtkMRMLSliceNode()
        slice_node.SetLayoutName(name)
        scene.AddNode(slice_node)
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        scene.AddNode(composite)
    return SceneKit(scene, segmentations_logic, color_logic)


def import_case(kit: SceneKit, volume_node, case: Case, **kwargs):
    return import_results(kit.scene, kit.segmentations_logic, volume_node, case.segmentation_path,
                          case.uncertainty_path, case.summary_path, **kwargs)


def export_with_slicer(kit: SceneKit, segmentation_node, volume_node) -> slicer.vtkMRMLLabelMapVolumeNode:
    """Slicer's own export of the three segments (values 1, 2, 3 in STRUCTURES order)."""
    ids = vtk.vtkStringArray()
    for s in STRUCTURES:
        ids.InsertNextValue(s.key)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    kit.scene.AddNode(labelmap)
    assert kit.segmentations_logic.ExportSegmentsToLabelmapNode(
        segmentation_node, ids, labelmap, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    return labelmap


def on_file_grid(node, case: Case, interpolator=sitk.sitkNearestNeighbor) -> np.ndarray:
    """The node's voxels resampled (nearest: exact where centres coincide) onto the files' grid."""
    return sitk.GetArrayFromImage(sitk.Resample(volumes.sitk_from_node(node), case.image, sitk.Transform(),
                                                interpolator))


def scene_state(scene) -> list[tuple[str, int]]:
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime())
            for i in range(scene.GetNumberOfNodes())]


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


def assert_project_segments(segmentation_node) -> None:
    """One segment per structure with the project's id, name, colour and terminology."""
    segmentation = segmentation_node.GetSegmentation()
    assert sorted(segmentation.GetSegmentIDs()) == sorted(s.key for s in STRUCTURES)
    for s in STRUCTURES:
        segment = segmentation.GetSegment(s.key)
        assert segment.GetName() == s.name
        np.testing.assert_allclose(segment.GetColor(), s.color, atol=1e-6)
        entry = slicer.vtkSlicerTerminologyEntry()
        # Slicer's own parser must understand the tag we wrote
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        for coded, expected in ((entry.GetCategoryObject(), s.category), (entry.GetTypeObject(), s.type)):
            assert (coded.GetCodingSchemeDesignator(), coded.GetCodeValue(), coded.GetCodeMeaning()) == expected
        assert entry.GetTerminologyContextName() == TERMINOLOGY_CONTEXT


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
