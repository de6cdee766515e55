"""Put a label array into a segmentation node as the project's named, coded segments."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.grid.map_back import nonzero_box

from .terminology import terminology_entry


def oriented_mask(mask: np.ndarray, volume_node,
                  offset: tuple[int, int, int] = (0, 0, 0)) -> slicer.vtkOrientedImageData:
    """A (k, j, i) boolean mask as a binary vtkOrientedImageData on the volume's grid, cropped to
    the mask's bounding box (the segment gets the same voxels; Slicer copies less). ``offset``:
    the volume index of ``mask``'s first voxel, when it is a box cut out of the volume."""
    image = slicer.vtkOrientedImageData()
    box = nonzero_box(mask) or (slice(0, 1),) * 3  # an empty mask: its corner voxel
    cropped = mask[box]
    lo = [b.start + o for b, o in zip(box, offset)]
    hi = [b.stop - 1 + o for b, o in zip(box, offset)]
    image.SetExtent(lo[2], hi[2], lo[1], hi[1], lo[0], hi[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(cropped, dtype=np.uint8).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def set_structure_segments(segmentations_logic, segmentation_node, labels: np.ndarray, volume_node) -> None:
    """Replace the project's segments (IDs = structure keys) with the contents of ``labels``.

    Segments a person added under other IDs are kept. Every structure gets a segment,
    empty if the model found none, so it can be painted in by hand. A structure's segment
    that exists already is updated where it is (contents, name, colour, terminology, label
    value), so its place in the list and its display settings stay, and the slider's step
    does not pay for removing and adding segments (about 0.04 s on an 11 M-voxel volume).
    """
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    # every structure lies in the box of the labelled voxels: each is looked for there only
    # (a spine is a fraction of an 11 M-voxel field of view)
    box = nonzero_box(labels) or (slice(0, 1),) * 3
    labels = labels[box]
    corner = tuple(b.start for b in box)
    was_modifying = segmentation_node.StartModify()
    try:
        for structure in STRUCTURES:
            segment = segmentation.GetSegment(structure.key)
            if segment is None:
                segmentation.AddEmptySegment(structure.key, structure.name, list(structure.color))
                segment = segmentation.GetSegment(structure.key)
            else:
                segment.SetName(structure.name)
                segment.SetColor(*structure.color)
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(structure))
            segment.SetLabelValue(structure.value)
            mask = labels == structure.value
            if mask.any():
                segmentations_logic.SetBinaryLabelmapToSegment(
                    oriented_mask(mask, volume_node, corner), segmentation_node, structure.key,
                    slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
            else:
                segmentations_logic.ClearSegment(segmentation_node, structure.key)
    finally:
        segmentation_node.EndModify(was_modifying)


def structure_segment_values(segmentation_node) -> dict[str, int]:
    """Label value for each of the project's segments present in the node, by segment ID."""
    segmentation = segmentation_node.GetSegmentation()
    return {s.key: s.value for s in STRUCTURES if segmentation.GetSegment(s.key) is not None}
