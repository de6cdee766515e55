"""Physical geometry for measuring: voxel points in LPS mm, local frames, resampled planes.

Everything here works in physical millimetres through the image's origin, spacing and
direction, so an oblique or anisotropic image gives the same numbers as a resampled
copy of it (up to the resolution of the masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

PLANE_STEP_MM = 0.5  # pixel size of the planes measurements are read on


def voxel_points(image: sitk.Image, index_zyx: np.ndarray) -> np.ndarray:
    """(N, 3) numpy indices (z, y, x) -> (N, 3) physical LPS points (mm)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    scaled = index_zyx[:, ::-1].astype(np.float64) * np.array(image.GetSpacing())
    return scaled @ direction.T + np.array(image.GetOrigin())


def superior_axis(image: sitk.Image) -> tuple[int, int]:
    """(numpy axis closest to superior-inferior, +1 if the index grows superiorly else -1)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    k = int(np.argmax(np.abs(direction[2])))  # image axis k (x, y, z) most along LPS z
    return 2 - k, (1 if direction[2, k] > 0 else -1)


@dataclass
class Frame:
    """A local right-handed frame at ``centre``: ``lr`` (patient left), ``ap`` (posterior),
    ``n`` (superior, along the spine)."""

    centre: np.ndarray
    lr: np.ndarray
    ap: np.ndarray
    n: np.ndarray

    @staticmethod
    def from_normal(centre: np.ndarray, normal: np.ndarray) -> "Frame":
        n = normal / np.linalg.norm(normal)
        if n[2] < 0:
            n = -n
        lr = np.array([1.0, 0.0, 0.0]) - n[0] * n  # the patient's left-right, in the plane
        if np.linalg.norm(lr) < 1e-3:
            lr = np.array([0.0, 1.0, 0.0]) - n[1] * n
        lr /= np.linalg.norm(lr)
        ap = np.cross(n, lr)
        return Frame(np.asarray(centre, float), lr, ap, n)


def principal_normal(points: np.ndarray) -> np.ndarray:
    """Direction of least spread of a point cloud (a disc's axis), pointing superiorly."""
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    n = vectors[:, 0]
    return n if n[2] >= 0 else -n


def resample_plane(image: sitk.Image, frame: Frame, axes: tuple[str, str],
                   ranges: tuple[tuple[float, float], tuple[float, float]],
                   linear: bool = True, step: float = PLANE_STEP_MM) -> np.ndarray:
    """Values of ``image`` on the plane through ``frame.centre`` spanned by two frame axes.

    ``axes``: ("ap", "n") is the mid-sagittal plane, ("lr", "ap") the axial plane.
    ``ranges``: (lo, hi) mm along each axis. Returns an array (rows = second axis,
    columns = first axis) of float32 values; outside the image reads 0.
    """
    u, v = (getattr(frame, a) for a in axes)
    w = np.cross(u, v)
    sizes = [max(1, int(round((hi - lo) / step)) + 1) for lo, hi in ranges]
    origin = frame.centre + ranges[0][0] * u + ranges[1][0] * v
    direction = np.stack([u, v, w], axis=1)  # columns: output axes
    out = sitk.Resample(image, [sizes[0], sizes[1], 1], sitk.Transform(),
                        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                        origin.tolist(), [step, step, step], direction.ravel().tolist(), 0.0,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)[0]


def mask_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A float32 image of a boolean array on ``reference``'s geometry (for linear sampling)."""
    out = sitk.GetImageFromArray(mask.astype(np.float32))
    out.CopyInformation(reference)
    return out


Box = tuple[slice, slice, slice]  # numpy (z, y, x) slices


def nonzero_box(arrays: list[np.ndarray], margin_zyx: tuple[int, int, int]) -> Box | None:
    """The bounding box of every non-zero voxel of ``arrays`` (same shape), grown by
    ``margin_zyx`` voxels and clipped to the array; None when all are empty. Measuring
    in this box instead of the whole field of view costs the spine's size, not the image's."""
    shape = arrays[0].shape
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.zeros(shape[axis], bool)
        for array in arrays:
            hit |= array.any(axis=others)
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return None
        box.append(slice(max(0, int(idx[0]) - margin_zyx[axis]), min(shape[axis], int(idx[-1]) + 1 + margin_zyx[axis])))
    return tuple(box)


def crop(image: sitk.Image, box: Box) -> sitk.Image:
    """``image`` cut to a numpy (z, y, x) box, keeping its physical position."""
    return image[box[2], box[1], box[0]]
