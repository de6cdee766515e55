"""Helpers shared by the tests (no test imports another test file): a phantom folder and a tiny
model trained on it for a few steps (enough to exercise every code path, not to be good),
engine-like output files, a slicer-core scene, and waiting on real processes."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from scipy.spatial.transform import Rotation

from SpineSegDiffLib.core.labels import STRUCTURES, TERMINOLOGY_CONTEXT
from SpineSegDiffLib.data.outputs import write_seg_nrrd
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.results import import_results

TINY_GRID = dict(grid_spacing_mm=4.0, grid_size=64, min_slice_spacing_mm=2.0)


def make_phantom_folder(out: Path, cases: int = 2, seed: int = 5) -> Path:
    from SpineSegDiffLib.data.phantom import write_spider_folder

    return write_spider_folder(out, cases=cases, seed=seed)


def train_tiny_model(data: Path, out: Path, epochs: int = 1, **overrides) -> Path:
    from SpineSegDiffLib.training.config import TrainConfig
    from SpineSegDiffLib.training.loop import train
    from SpineSegDiffLib.training.data import load_folder

    # no calibration: a barely trained model calibrated on its validation slices predicts
    # the prior (background) everywhere, and the tests need every structure in the output
    # 2D, so tests can widen it to 2.5D (the training default)
    cfg = TrainConfig(features="tiny", image_channels=1, epochs=epochs, batch_size=8, val_fraction=0.5,
                      val_steps=2, default_samples=2, default_steps=3, fused_steps=2, calibrate=False,
                      **{**TINY_GRID, **overrides})
    cases = load_folder(data, cfg.grid_spec())
    return train(cases, cfg, out, device="cpu", log=lambda m: None).model_path


# -- engine-like outputs and a slicer-core scene (MRML tests) ---------------------------------

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


# -- real processes ----------------------------------------------------------------------------

def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
