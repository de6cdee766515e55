"""Nearest labelled voxel lookups: k-d trees on a mask's surface instead of distance maps.

A distance map with indices over the spine's whole box cost seconds per case; the voxels
that need a nearest neighbour are few (pieces a coarse grid cut off, a sample's voxels
just outside the fused result), so a k-d tree of the mask's surface voxels answers them
in milliseconds. The nearest mask voxel to a point outside the mask is always a surface
voxel (one with a 6-neighbour outside), so the surface is enough. Where two voxels are
equally near, the tree may pick the other one than a distance map would.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

CANAL_VALUE = 100  # SPIDER values (levels.py names every value; defined here, below it)
DISC_OFFSET = 200


class SurfaceTree:
    """The surface voxels of a boolean mask in a k-d tree (physical mm through ``spacing_zyx``)."""

    def __init__(self, mask: np.ndarray, spacing_zyx: tuple[float, ...]):
        self.spacing = np.asarray(spacing_zyx, float)
        surface = mask & ~ndimage.binary_erosion(mask, border_value=0)
        self.points = np.argwhere(surface)
        self.tree = cKDTree(self.points * self.spacing) if len(self.points) else None

    def nearest(self, query_zyx: np.ndarray, max_mm: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """(found, (M, 3) nearest surface voxel index) for (M, 3) query voxel indices;
        ``found`` is False where nothing lies within ``max_mm``."""
        if self.tree is None or len(query_zyx) == 0:
            return np.zeros(len(query_zyx), bool), np.zeros((len(query_zyx), 3), np.int64)
        bound = max_mm * (1 + 1e-9) if np.isfinite(max_mm) else np.inf
        dist, i = self.tree.query(query_zyx * self.spacing, distance_upper_bound=bound)
        found = dist <= max_mm
        return found, self.points[np.minimum(i, len(self.points) - 1)]


def take_nearest_label(labels: np.ndarray, missed: np.ndarray, spacing_zyx: tuple[float, ...]) -> None:
    """``missed`` voxels take the label of the nearest labelled voxel (in place)."""
    found, nearest = SurfaceTree(labels > 0, spacing_zyx).nearest(np.argwhere(missed))
    idx = np.argwhere(missed)[found]
    labels[tuple(idx.T)] = labels[tuple(nearest[found].T)]


class NearestLevel:
    """Gives a sample's vertebra / disc voxels the level of the nearest fused instance of
    the same structure (within ``max_mm``), so every sample is measured level by level.
    Most of a sample's voxels lie on the fused instance itself and take its value
    directly; the others look up the nearest fused voxel in a tree built once per case."""

    def __init__(self, fused: np.ndarray, spacing_zyx: tuple[float, float, float], max_mm: float = 10.0):
        self.fused, self.spacing, self.max_mm = fused, spacing_zyx, max_mm
        self.kinds = {2: (fused > 0) & (fused < DISC_OFFSET) & (fused != CANAL_VALUE), 3: fused > DISC_OFFSET}
        self.trees: dict[int, SurfaceTree] = {}

    def __call__(self, sample_semantic: np.ndarray) -> np.ndarray:
        out = np.zeros(self.fused.shape, np.uint16)
        out[sample_semantic == 1] = CANAL_VALUE
        for structure, have in self.kinds.items():
            if not have.any():
                continue
            want = sample_semantic == structure
            on = want & have
            out[on] = self.fused[on]
            off = np.argwhere(want & ~have)
            if len(off):
                if structure not in self.trees:
                    self.trees[structure] = SurfaceTree(have, self.spacing)
                found, nearest = self.trees[structure].nearest(off, self.max_mm)
                out[tuple(off[found].T)] = self.fused[tuple(nearest[found].T)]
        return out
