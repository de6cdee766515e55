"""Hand a result to the Segment Editor: its segmentation, its source volume, a segment selected.

Qt-free: it fills a vtkMRMLSegmentEditorNode (the Segment Editor module's parameter node in
the app; a new one in tests), so the choice of nodes is tested with slicer-core's real
segment editor classes. The uncertainty overlay is re-applied by the caller afterwards,
because the Segment Editor puts the source volume in the slice views' background.
"""

from __future__ import annotations

import slicer

from SpineSegDiffLib.core.labels import STRUCTURES

from . import node_tags


def source_volume_of(segmentation_node):
    """The volume a result was made from: its reference-geometry node reference (set at
    import), else the input volume ID it was tagged with; None if neither is in the scene."""
    scene = segmentation_node.GetScene()
    node = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    if node is None and scene is not None:
        node_id = segmentation_node.GetAttribute(node_tags.INPUT_VOLUME_ID)
        node = scene.GetNodeByID(node_id) if node_id else None
    return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None


def first_structure_segment(segmentation_node, prefer: str | None = None) -> str | None:
    """``prefer`` when the segmentation has it, else the first of the project's segments present."""
    segmentation = segmentation_node.GetSegmentation()
    if prefer and segmentation.GetSegment(prefer) is not None:
        return prefer
    return next((s.key for s in STRUCTURES if segmentation.GetSegment(s.key) is not None), None)


def setup_editor_node(editor_node: slicer.vtkMRMLSegmentEditorNode, segmentation_node, volume_node=None,
                      segment_id: str | None = None) -> slicer.vtkMRMLSegmentEditorNode:
    """Point ``editor_node`` at the result and its source volume and select a segment.

    ``volume_node`` defaults to the result's own source (``source_volume_of``); a result whose
    source is gone is refused rather than edited on the wrong image.
    """
    if segmentation_node is None:
        raise ValueError("no segmentation to edit: run Segment first")
    volume_node = volume_node or source_volume_of(segmentation_node)
    if volume_node is None:
        raise ValueError(f"segmentation '{segmentation_node.GetName()}' has no source volume in the scene; "
                         f"select its input volume")
    editor_node.SetAndObserveSegmentationNode(segmentation_node)
    # SourceVolume since Slicer 5.4 (MasterVolume before)
    if hasattr(editor_node, "SetAndObserveSourceVolumeNode"):
        editor_node.SetAndObserveSourceVolumeNode(volume_node)
    else:  # pragma: no cover - older Slicer
        editor_node.SetAndObserveMasterVolumeNode(volume_node)
    selected = first_structure_segment(segmentation_node, segment_id)
    if selected is not None:
        editor_node.SetSelectedSegmentID(selected)
    return editor_node


def new_editor_node(scene: slicer.vtkMRMLScene, name: str = "SpineSegDiff segment editor"):
    """A segment editor parameter node in ``scene`` (the app's Segment Editor brings its own)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", name)
    return node
