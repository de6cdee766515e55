"""How the uncertainty map looks: its colour map and the slice-view overlay."""

from __future__ import annotations

import slicer

# perceptual maps come from files that only the Slicer application loads; the
# procedural ones exist wherever the colour logic ran (also in slicer-core)
PREFERRED_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileViridis.txt",
    "vtkMRMLColorTableNodeFileInferno.txt",
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeRainbow",
)
FALLBACK_COLOR_NODE_ID = "vtkMRMLColorTableNodeGrey"


def choose_color_node_id(scene: slicer.vtkMRMLScene) -> str:
    """The best colour node for an uncertainty map that this scene holds."""
    for node_id in PREFERRED_COLOR_NODE_IDS:
        if scene.GetNodeByID(node_id) is not None:
            return node_id
    return FALLBACK_COLOR_NODE_ID


def configure_display(scene: slicer.vtkMRMLScene, uncertainty_node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Colour map and a fixed 0..1 window, so maps of different runs look alike."""
    display = uncertainty_node.GetDisplayNode()
    if display is None:
        display = slicer.vtkMRMLScalarVolumeDisplayNode()
        scene.AddNode(display)
        uncertainty_node.SetAndObserveDisplayNodeID(display.GetID())
    was_modifying = display.StartModify()  # one Modified event for the three changes
    display.SetAndObserveColorNodeID(choose_color_node_id(scene))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.EndModify(was_modifying)


def slice_composite_nodes(scene: slicer.vtkMRMLScene) -> list:
    """Every slice view's composite node (the app makes one per view; tests add them)."""
    class_name = "vtkMRMLSliceCompositeNode"
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def show_overlay(scene: slicer.vtkMRMLScene, background_volume_node, uncertainty_node,
                 opacity: float = 0.5, visible: bool = True) -> None:
    """Show the input in the background and the uncertainty on top, in every slice view.

    ``visible`` False keeps the uncertainty as foreground with opacity 0, so showing it
    again restores the same views without reselecting anything.
    """
    opacity = min(max(float(opacity), 0.0), 1.0)
    for composite in slice_composite_nodes(scene):
        composite.SetBackgroundVolumeID(background_volume_node.GetID() if background_volume_node else None)
        composite.SetForegroundVolumeID(uncertainty_node.GetID() if uncertainty_node else None)
        composite.SetForegroundOpacity(opacity if visible else 0.0)
