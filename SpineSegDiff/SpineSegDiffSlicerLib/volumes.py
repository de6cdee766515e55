"""Volume nodes <-> files and SimpleITK images, with exact geometry.

MRML stores geometry as an IJK->RAS matrix; SimpleITK (like the files) uses LPS
origin/spacing/direction. The two differ only by flipping the first two physical
axes, so conversions here are exact (no resampling, voxel order kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from SpineSegDiffLib.core.errors import InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def ijk_to_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's 4x4 IJK->RAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sitk_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The IJK->RAS matrix that places ``image``'s voxels where SimpleITK places them."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_TO_RAS @ np.array(image.GetOrigin())
    return matrix


def same_grid(a: np.ndarray, dims_a, b: np.ndarray, dims_b, tolerance_mm: float = 1e-3) -> bool:
    """True when two IJK->RAS matrices and dimensions describe the same voxel grid."""
    return tuple(dims_a) == tuple(dims_b) and bool(np.allclose(a, b, atol=tolerance_mm, rtol=0))


def lattice_map(source_ijk_to_ras: np.ndarray, target_ijk_to_ras: np.ndarray,
                tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray] | None:
    """(signed permutation P, integer offset t) with target_ijk = P @ source_ijk + t, or None.

    Slicer's reader flips the third voxel axis of left-handed files (it keeps IJK->RAS
    right-handed), so the same voxels can arrive with their axes flipped or permuted.
    Such grids share every voxel centre and convert exactly, without resampling.
    """
    mapping = np.linalg.solve(target_ijk_to_ras, source_ijk_to_ras)
    permutation = np.round(mapping[:3, :3])
    offset = np.round(mapping[:3, 3])
    if not (np.allclose(mapping[:3, :3], permutation, atol=tolerance, rtol=0)
            and np.allclose(mapping[:3, 3], offset, atol=tolerance, rtol=0)
            and np.array_equal(np.abs(permutation).sum(axis=0), np.ones(3))
            and np.array_equal(np.abs(permutation).sum(axis=1), np.ones(3))):
        return None
    return permutation.astype(int), offset.astype(int)


def array_on_grid(array: np.ndarray, source_ijk_to_ras: np.ndarray, target_ijk_to_ras: np.ndarray,
                  target_dims) -> np.ndarray | None:
    """A (k, j, i) array re-indexed onto another grid with the same voxel centres, or None."""
    found = lattice_map(source_ijk_to_ras, target_ijk_to_ras)
    if found is None:
        return None
    permutation, offset = found
    source_axes = [int(np.flatnonzero(row)[0]) for row in permutation]  # source axis of each target axis
    ijk = array.transpose(2, 1, 0).transpose(source_axes)
    if ijk.shape != tuple(target_dims):
        return None
    for axis, source_axis in enumerate(source_axes):
        sign = permutation[axis, source_axis]
        if offset[axis] != (0 if sign > 0 else target_dims[axis] - 1):
            return None  # same lattice, different box: not the same grid
        if sign < 0:
            ijk = np.flip(ijk, axis=axis)
    return np.ascontiguousarray(ijk.transpose(2, 1, 0))


def node_dimensions(node: slicer.vtkMRMLVolumeNode) -> tuple[int, int, int]:
    image = node.GetImageData()
    return tuple(image.GetDimensions()) if image is not None else (0, 0, 0)


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """A (k, j, i) numpy array as vtkImageData (i fastest, as VTK stores points)."""
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(array.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def set_node_from_sitk(node: slicer.vtkMRMLVolumeNode, image: sitk.Image) -> None:
    """Put ``image``'s voxels and geometry into ``node`` (replacing what it held)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("only 3D scalar images can become volume nodes: convert the image to 3D scalar first")
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(sitk_ijk_to_ras(image)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, value)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image_data_from_array(sitk.GetArrayFromImage(image)))


def set_node_array(node: slicer.vtkMRMLVolumeNode, array: np.ndarray, geometry_node: slicer.vtkMRMLVolumeNode) -> None:
    """Give ``node`` the voxels ``array`` on the grid of ``geometry_node``."""
    node.CopyOrientation(geometry_node)
    node.SetAndObserveImageData(image_data_from_array(array))


def array_from_node(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """A copy of the node's voxels as a (k, j, i) numpy array."""
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"volume '{node.GetName()}' holds no image data: load the volume again")
    i, j, k = image_data.GetDimensions()
    array = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    return array.reshape(k, j, i).copy()


def sitk_from_node(node: slicer.vtkMRMLVolumeNode) -> sitk.Image:
    """The node's voxels as a SimpleITK image in LPS, voxel for voxel."""
    image = sitk.GetImageFromArray(array_from_node(node))
    matrix = ijk_to_ras(node)
    ijk_to_lps = _LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(ijk_to_lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps / spacing).ravel().tolist())
    image.SetOrigin((_LPS_TO_RAS @ matrix[:3, 3]).tolist())
    return image


def _check_volume_path(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: file not found: choose an existing volume file")
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise InputError(f"{path}: not a volume file ({', '.join(VOLUME_SUFFIXES)}): choose another file")


def read_volume_node(path: str | Path, labelmap: bool = False, name: str | None = None) -> slicer.vtkMRMLVolumeNode:
    """Read a volume file with Slicer's own storage node into a node NOT added to any scene.

    Keeping the node outside the scene lets callers read everything first and touch
    the scene only when all reads succeeded.
    """
    path = Path(path)
    _check_volume_path(path)
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name or path.name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    # one file only: the archetype reader would otherwise gather similarly named files as a series
    storage.SetSingleFile(True)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise InputError(f"{path}: could not be read as a volume (corrupt or unsupported): export it again")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(f"{path}: has several components per voxel: use a scalar volume")
    return node


def add_volume_node(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLVolumeNode) -> slicer.vtkMRMLVolumeNode:
    """Add a detached volume node to ``scene`` with a default display node."""
    scene.AddNode(node)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def load_volume(scene: slicer.vtkMRMLScene, path: str | Path, labelmap: bool = False,
                name: str | None = None) -> slicer.vtkMRMLVolumeNode:
    """Read a volume file through Slicer's storage node and add it to ``scene``."""
    node = read_volume_node(path, labelmap=labelmap, name=name)
    add_volume_node(scene, node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node
