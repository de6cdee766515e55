"""Place results under their source volume's study in the subject hierarchy.

DICOM export and the Data module need the segmentation under the source's study; the
peers (TotalSegmentator, MONAIAuto3DSeg) place results there too. (The Segment Editor's
source volume comes from the reference-image-geometry node reference, which
``segments.set_structure_segments`` sets.)
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
    or folder)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    parent = hierarchy.GetItemParent(_item_of(hierarchy, volume_node))
    for node in result_nodes:
        if node is None:
            continue
        hierarchy.SetItemParent(_item_of(hierarchy, node), parent)
