"""Bring the engine's outputs into the scene: one segmentation and one uncertainty map per input.

Everything is read and checked first, outside the scene; the scene changes only once
all of it succeeded, so a bad file leaves the user's scene exactly as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, BY_VALUE, STRUCTURES

from . import labelmaps, node_tags, volumes
from .hierarchy import place_with_source
from .review import ReviewRow, review_rows
from .segments import set_structure_segments
from .uncertainty_display import configure_display


@dataclass
class ImportedResults:
    segmentation_node: slicer.vtkMRMLSegmentationNode
    uncertainty_node: slicer.vtkMRMLScalarVolumeNode
    review_rows: list[ReviewRow]
    measurements_table: slicer.vtkMRMLTableNode | None = None  # when the run measured


@dataclass
class _StagedResults:
    labels: np.ndarray  # (k, j, i) uint8 on the input's grid
    uncertainty: slicer.vtkMRMLScalarVolumeNode  # read, not in any scene
    summary: dict
    rows: list[ReviewRow]


def read_summary(summary_path_or_dict) -> dict:
    """The engine's summary as a dict (given as a dict or as a JSON file path)."""
    if isinstance(summary_path_or_dict, dict):
        return summary_path_or_dict
    path = Path(summary_path_or_dict)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: summary file not found: choose the summary JSON of the run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON summary ({exc}): re-run the segmentation") from None
    if not isinstance(summary, dict):
        raise InputError(f"{path}: the summary is not a JSON object: re-run the segmentation")
    return summary


def _voxels_on_volume_grid(node, path: Path, volume_node) -> np.ndarray:
    """The node's voxels indexed like the volume's (exactly: same voxel centres), or InputError."""
    array = volumes.array_on_grid(volumes.array_from_node(node), volumes.ijk_to_ras(node),
                                  volumes.ijk_to_ras(volume_node), volumes.node_dimensions(volume_node))
    if array is None:
        raise InputError(f"{path}: its voxel grid differs from volume '{volume_node.GetName()}': "
                         "choose the outputs that were computed for this volume")
    return array


def _structure_for_segment(segment_id: str, segment) -> int | None:
    """The project's label value a segment of a .seg.nrrd stands for (ID, name, or label value)."""
    if segment_id in BY_KEY:
        return BY_KEY[segment_id].value
    name = (segment.GetName() or "").strip().lower()
    for structure in STRUCTURES:
        if name in (structure.key, structure.name.lower()):
            return structure.value
    return segment.GetLabelValue() if segment.GetLabelValue() in BY_VALUE else None


def _check_whole(path: Path, what: str) -> None:
    """Refuse a file that holds less than its header promises: Slicer's and ITK's readers
    fill the missing voxels with zeros and would show a cut result as a whole one."""
    from SpineSegDiffLib.data.image_integrity import Incomplete, check_complete
    from SpineSegDiffLib.data.imageio import header_voxel_bytes

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        check_complete(path, header_voxel_bytes(reader))
    except RuntimeError:
        raise InputError(f"{path}: could not be read as a {what} (corrupt?): "
                         "re-run the segmentation") from None
    except Incomplete as exc:
        raise InputError(f"{path}: the {what} file is incomplete ({exc}): "
                         "re-run the segmentation") from None


def _readable_by_itk(path: Path) -> None:
    # Slicer's segmentation reader lets ITK exceptions escape, which aborts the whole
    # process (Slicer included): let SimpleITK, which raises cleanly, read it first
    _check_whole(path, "Slicer segmentation")
    try:
        sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{path}: could not be read as a Slicer segmentation (corrupt?): "
                         "re-run the segmentation") from None


def _read_seg_nrrd(path: Path, segmentations_logic, volume_node) -> np.ndarray:
    _readable_by_itk(path)
    # a private scene: reading and exporting need one, and the user's must stay untouched
    scratch = slicer.vtkMRMLScene()
    segmentation_node = slicer.vtkMRMLSegmentationNode()
    scratch.AddNode(segmentation_node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(segmentation_node):
        raise InputError(f"{path}: could not be read as a Slicer segmentation (corrupt?): re-run the segmentation")
    segmentation = segmentation_node.GetSegmentation()
    values = {}
    for segment_id in segmentation.GetSegmentIDs():
        value = _structure_for_segment(segment_id, segmentation.GetSegment(segment_id))
        if value is not None:
            values[segment_id] = value
    if not values:
        raise InputError(f"{path}: none of its segments is a spinal canal, vertebrae or discs segment: "
                         "choose the segmentation written by SpineSegDiff")
    try:
        return labelmaps.label_array(segmentations_logic, segmentation_node, volume_node, values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _read_labelmap(path: Path, volume_node) -> np.ndarray:
    _check_whole(path, "segmentation")
    labels = _voxels_on_volume_grid(volumes.read_volume_node(path, labelmap=True), path, volume_node)
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *BY_VALUE})
    if unknown:
        raise InputError(f"{path}: holds label values {unknown[:5]} besides 0..3: choose the segmentation "
                         "written by SpineSegDiff")
    return labels.astype(np.uint8)


def read_labels(path, segmentations_logic, volume_node) -> np.ndarray:
    """The engine's segmentation file (.seg.nrrd or labelmap) as a label array on the input's grid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: segmentation file not found: run the segmentation first")
    if path.name.lower().endswith(".seg.nrrd"):
        return _read_seg_nrrd(path, segmentations_logic, volume_node)
    return _read_labelmap(path, volume_node)


def read_uncertainty(path, volume_node) -> slicer.vtkMRMLScalarVolumeNode:
    """The uncertainty map as a volume node outside any scene, checked against the input grid."""
    path = Path(path)
    if path.is_file():
        _check_whole(path, "uncertainty map")
    values = _voxels_on_volume_grid(volumes.read_volume_node(path), path, volume_node)
    if not np.isfinite(values).all():
        raise InputError(f"{path}: the uncertainty map holds NaN or infinite values: re-run the segmentation")
    node = slicer.vtkMRMLScalarVolumeNode()
    volumes.set_node_array(node, values, volume_node)
    return node


def _stage(segmentations_logic, volume_node, segmentation_path, uncertainty_path, summary) -> _StagedResults:
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("no input volume with image data is selected: load and select the MRI first")
    summary = read_summary(summary)
    rows = review_rows(summary)
    labels = read_labels(segmentation_path, segmentations_logic, volume_node)
    uncertainty = read_uncertainty(uncertainty_path, volume_node)
    return _StagedResults(labels, uncertainty, summary, rows)


def _result_segmentation_node(scene, volume_node, given):
    node = given or node_tags.find_result_node(scene, "vtkMRMLSegmentationNode", volume_node,
                                               node_tags.ROLE_SEGMENTATION)
    if node is None:
        node = slicer.vtkMRMLSegmentationNode()
        node.SetName(f"{volume_node.GetName()} SpineSegDiff")
        scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
    node.SetAttribute(node_tags.INPUT_VOLUME_ID, volume_node.GetID())
    node.SetAttribute(node_tags.ROLE, node_tags.ROLE_SEGMENTATION)
    return node


def _result_uncertainty_node(scene, volume_node, staged_node):
    node = node_tags.find_result_node(scene, "vtkMRMLScalarVolumeNode", volume_node, node_tags.ROLE_UNCERTAINTY)
    if node is None:
        node = slicer.vtkMRMLScalarVolumeNode()
        node.SetName(f"{volume_node.GetName()} uncertainty")
        scene.AddNode(node)
        node.SetAttribute(node_tags.INPUT_VOLUME_ID, volume_node.GetID())
        node.SetAttribute(node_tags.ROLE, node_tags.ROLE_UNCERTAINTY)
    node.CopyOrientation(staged_node)
    node.SetAndObserveImageData(staged_node.GetImageData())
    configure_display(scene, node)
    return node


def import_results(scene: slicer.vtkMRMLScene, segmentations_logic, volume_node,
                   segmentation_path, uncertainty_path, summary_path_or_dict,
                   segmentation_node: slicer.vtkMRMLSegmentationNode | None = None) -> ImportedResults:
    """Show one run's outputs for ``volume_node``, replacing the previous run's if any.

    Raises InputError (scene untouched) when a file is missing, unreadable, or not on
    the input's voxel grid.
    """
    staged = _stage(segmentations_logic, volume_node, segmentation_path, uncertainty_path, summary_path_or_dict)
    return _show(scene, segmentations_logic, volume_node, staged, segmentation_node)


def import_result_arrays(scene: slicer.vtkMRMLScene, segmentations_logic, volume_node, labels: np.ndarray,
                         uncertainty: np.ndarray, summary: dict,
                         segmentation_node: slicer.vtkMRMLSegmentationNode | None = None) -> ImportedResults:
    """``import_results`` for a result computed in this process (the slider's cached step):
    ``labels`` (uint8) and ``uncertainty`` (float32) are (k, j, i) arrays on the volume's own grid."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("no input volume with image data is selected: load and select the MRI first")
    if labels.shape != volume_node.GetImageData().GetDimensions()[::-1] or uncertainty.shape != labels.shape:
        raise InputError(f"the result's grid {labels.shape} differs from volume '{volume_node.GetName()}': "
                         "segment the volume again")
    uncertainty_node = slicer.vtkMRMLScalarVolumeNode()
    volumes.set_node_array(uncertainty_node, np.asarray(uncertainty, np.float32), volume_node)
    staged = _StagedResults(np.asarray(labels, np.uint8), uncertainty_node, summary, review_rows(summary))
    return _show(scene, segmentations_logic, volume_node, staged, segmentation_node)


def _show(scene, segmentations_logic, volume_node, staged: _StagedResults, segmentation_node) -> ImportedResults:
    """Put staged (read and checked) results into the scene."""
    seg_node = _result_segmentation_node(scene, volume_node, segmentation_node)
    set_structure_segments(segmentations_logic, seg_node, staged.labels, volume_node)
    seg_node.SetAttribute(node_tags.IMPORTED_LABELS_SHA256, labelmaps.checksum(staged.labels))
    seg_node.SetAttribute(node_tags.IMPORTED_STRUCTURES_SHA256,
                          json.dumps(labelmaps.structure_checksums(staged.labels)))
    seg_node.SetAttribute(node_tags.SUMMARY_JSON, json.dumps(staged.summary))
    uncertainty_node = _result_uncertainty_node(scene, volume_node, staged.uncertainty)
    place_with_source(scene, volume_node, (seg_node, uncertainty_node))
    return ImportedResults(seg_node, uncertainty_node, staged.rows)
