"""Tie results to their source volume: reference geometry node and subject hierarchy.

The Segment Editor picks a segmentation's source volume from its reference-image-geometry
node reference, and DICOM export needs the segmentation under the source's study; the
peers (TotalSegmentator, MONAIAuto3DSeg) place results there too.
"""

from __future__ import annotations

import slicer


def _item_of(hierarchy, node) -> int:
    item = hierarchy.GetItemByDataNode(node)
    if not item:  # a bare scene (no subject hierarchy plugins) does not create items itself
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    return item


def place_with_source(scene: slicer.vtkMRMLScene, volume_node, result_nodes) -> None:
    """Put each result node under the volume's parent in the subject hierarchy (its study
    or folder) and make the volume the segmentation's reference geometry."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    parent = hierarchy.GetItemParent(_item_of(hierarchy, volume_node))
    for node in result_nodes:
        if node is None:
            continue
        if isinstance(node, slicer.vtkMRMLSegmentationNode):
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        hierarchy.SetItemParent(_item_of(hierarchy, node), parent)
