"""Segments <-> label arrays on a volume's exact voxel grid.

Exports go through Slicer's own ExportSegmentsToLabelmapNode with the volume as
reference, but only after checking that every segment already lies on that grid:
otherwise Slicer would silently resample it, and a training label must never be
resampled behind the user's back.
"""

from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk

from SpineSegDiffLib.core.errors import InputError

from . import volumes

def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def segment_on_grid(segmentations_logic, segmentation_node, segment_id: str, volume_node) -> bool:
    """True when the segment's stored labelmap uses the volume's voxel grid (or is empty)."""
    oriented = slicer.vtkOrientedImageData()
    if not segmentations_logic.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segment_id, oriented, False):
        return True  # no labelmap stored (e.g. surfaces only): nothing to compare
    extent = oriented.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return True  # empty segment: its geometry carries no voxels
    matrix = vtk.vtkMatrix4x4()
    oriented.GetImageToWorldMatrix(matrix)
    # same voxel centres (axes possibly flipped or swapped, box possibly cropped) export exactly
    return volumes.lattice_map(_matrix_to_numpy(matrix), volumes.ijk_to_ras(volume_node)) is not None


def check_segments_on_grid(segmentations_logic, segmentation_node, segment_ids, volume_node) -> None:
    """Raise InputError naming the first segment that is not on the volume's voxel grid."""
    for segment_id in segment_ids:
        if not segment_on_grid(segmentations_logic, segmentation_node, segment_id, volume_node):
            name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
            raise InputError(
                f"segment '{name}' of '{segmentation_node.GetName()}' is not on the voxel grid of volume "
                f"'{volume_node.GetName()}': choose the volume it was made on, or resample the "
                "segmentation onto this volume (Segmentations module, Specify geometry)")


def label_array(segmentations_logic, segmentation_node, volume_node,
                values_by_segment_id: dict[str, int]) -> np.ndarray:
    """The segments as one (k, j, i) uint8 array on ``volume_node``'s grid.

    ``values_by_segment_id`` gives each segment's label value; segments not listed are
    left out. Where segments overlap, the later one in the dict wins (Slicer's rule).
    """
    segment_ids = [sid for sid in values_by_segment_id
                   if segmentation_node.GetSegmentation().GetSegment(sid) is not None]
    check_segments_on_grid(segmentations_logic, segmentation_node, segment_ids, volume_node)
    dims = volumes.node_dimensions(volume_node)
    result = np.zeros(dims[::-1], dtype=np.uint8)
    if not segment_ids:
        return result
    scene = segmentation_node.GetScene()
    if scene is None:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' is not in a scene: add it first")
    exported = slicer.vtkMRMLLabelMapVolumeNode()
    exported.SetHideFromEditors(True)
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    # the exporter needs its output in a scene and adds a display and a colour node
    # for it; all of them stay there only for this call
    nodes_before = _node_ids(scene)
    scene.AddNode(exported)
    try:
        ok = segmentations_logic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, exported, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok or exported.GetImageData() is None:
            raise InputError(f"segmentation '{segmentation_node.GetName()}' could not be exported to a "
                             "labelmap: check that it has a binary labelmap representation")
        if not volumes.same_grid(volumes.ijk_to_ras(exported), volumes.node_dimensions(exported),
                                 volumes.ijk_to_ras(volume_node), dims):
            raise InputError(f"segmentation '{segmentation_node.GetName()}' exported on another grid than "
                             f"volume '{volume_node.GetName()}': resample it onto the volume first")
        exported_values = volumes.array_from_node(exported)
    finally:
        for node_id in _node_ids(scene) - nodes_before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)
    # the exporter numbers segments 1..n in list order; map them to the project's values
    lookup = np.zeros(len(segment_ids) + 1, dtype=np.uint8)
    for index, segment_id in enumerate(segment_ids, start=1):
        lookup[index] = values_by_segment_id[segment_id]
    result[...] = lookup[exported_values]
    return result


def checksum(array: np.ndarray) -> str:
    """SHA-256 of a label array with its shape, to tell later whether it changed."""
    digest = hashlib.sha256(repr(array.shape).encode())
    # hashed in place (no bytes copy); a bool mask's uint8 view has the bytes of its 0/1 cast
    values = array.view(np.uint8) if array.dtype == np.bool_ else array
    digest.update(np.ascontiguousarray(values, dtype=np.uint8))
    return digest.hexdigest()


def structure_checksums(array: np.ndarray) -> dict[str, str]:
    """``checksum`` of each project structure's mask in a label array, by structure key."""
    from SpineSegDiffLib.core.labels import STRUCTURES

    return {s.key: checksum(array == s.value) for s in STRUCTURES}
