"""Volume files <-> MRML volume nodes <-> SimpleITK images, against the real slicer-core MRML."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from scipy.spatial.transform import Rotation

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffSlicerLib import volumes

GEOMETRIES = {
    # oblique and anisotropic: every axis rotated, three different spacings
    "oblique": (Rotation.from_euler("xyz", [21, -14, 33], degrees=True).as_matrix(), (0.6, 0.9, 3.3)),
    # as the real data: sagittal slices, superior->inferior flipped
    "flipped": (np.diag([1.0, 1.0, -1.0]), (3.5, 0.7, 0.7)),
}


def _image(direction, spacing, pixel=sitk.sitkFloat32, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 30, size=(9, 13, 17))  # (k, j, i): i, j, k all different lengths
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel)
    image.SetSpacing(spacing)
    image.SetOrigin((12.25, -40.5, 7.75))
    image.SetDirection(np.asarray(direction).ravel().tolist())
    return image


def _assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_storage_node_load_matches_simpleitk_voxel_for_voxel(tmp_path, geometry, suffix):
    path = tmp_path / f"mri{suffix}"
    sitk.WriteImage(_image(*GEOMETRIES[geometry]), str(path))
    scene = slicer.vtkMRMLScene()
    node = volumes.load_volume(scene, path)
    assert node.GetScene() is scene and node.GetStorageNode().GetFileName() == str(path)
    assert node.GetDisplayNode() is not None
    expected = sitk.ReadImage(str(path))
    # Slicer keeps IJK->RAS right-handed (flips the third axis of left-handed files):
    # compare voxel centre by voxel centre, re-indexed exactly onto the file's grid
    on_file_grid = volumes.array_on_grid(volumes.array_from_node(node), volumes.ijk_to_ras(node),
                                         volumes.sitk_ijk_to_ras(expected), expected.GetSize())
    assert on_file_grid is not None
    np.testing.assert_array_equal(on_file_grid, sitk.GetArrayFromImage(expected))
    # and physically: resampling the node's image onto the file's grid changes nothing
    resampled = sitk.Resample(volumes.sitk_from_node(node), expected, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(expected))


def test_array_on_grid_refuses_a_shifted_or_rescaled_grid():
    image = _image(*GEOMETRIES["oblique"])
    matrix = volumes.sitk_ijk_to_ras(image)
    array = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(volumes.array_on_grid(array, matrix, matrix, image.GetSize()), array)
    half_voxel = matrix.copy()
    half_voxel[:3, 3] += matrix[:3, 0] / 2
    assert volumes.array_on_grid(array, half_voxel, matrix, image.GetSize()) is None
    finer = matrix.copy()
    finer[:3, :3] *= 0.5
    assert volumes.array_on_grid(array, finer, matrix, image.GetSize()) is None
    one_voxel = matrix.copy()
    one_voxel[:3, 3] += matrix[:3, 1]  # same lattice, box moved by one voxel
    assert volumes.array_on_grid(array, one_voxel, matrix, image.GetSize()) is None


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_sitk_node_round_trip_is_exact_and_places_voxels_in_ras(geometry):
    image = _image(*GEOMETRIES[geometry], pixel=sitk.sitkInt16)
    node = slicer.vtkMRMLScalarVolumeNode()
    volumes.set_node_from_sitk(node, image)
    _assert_same_image(volumes.sitk_from_node(node), image)
    assert volumes.array_from_node(node).dtype == np.int16
    # a voxel's RAS position from the node equals SimpleITK's LPS position with x, y negated
    ijk = (16, 3, 7)
    ras = volumes.ijk_to_ras(node) @ np.array([*ijk, 1.0])
    lps = image.TransformIndexToPhysicalPoint(ijk)
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)


def test_labelmap_load_gives_labelmap_node(tmp_path):
    labels = sitk.GetImageFromArray(np.arange(9 * 13 * 17, dtype=np.uint8).reshape(9, 13, 17) % 4)
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(labels, str(path))
    node = volumes.load_volume(slicer.vtkMRMLScene(), path, labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(volumes.array_from_node(node), sitk.GetArrayFromImage(labels))


def test_unreadable_or_missing_volume_is_a_one_line_input_error(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b this is not a volume")
    scene = slicer.vtkMRMLScene()
    with pytest.raises(InputError, match="broken.nii.gz"):
        volumes.load_volume(scene, broken)
    with pytest.raises(InputError, match="not found"):
        volumes.load_volume(scene, tmp_path / "absent.nii.gz")
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
