"""The anatomy of one phantom case: spine, field of view and every tissue painted on the grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from SpineSegDiffLib.data.phantom.abdomen import body_outline, paint_abdomen
from SpineSegDiffLib.data.phantom.bones import paint_body, paint_disc
from SpineSegDiffLib.data.phantom.canal import paint_canal
from SpineSegDiffLib.data.phantom.grid import Grid
from SpineSegDiffLib.data.phantom.labels import PARTIAL_VERTEBRA_OFFSET, SACRUM_VALUE
from SpineSegDiffLib.data.phantom.muscles import paint_muscles
from SpineSegDiffLib.data.phantom.posterior_elements import (
    paint_inferior_articular,
    paint_posterior_elements,
    paint_ribs,
)
from SpineSegDiffLib.data.phantom.profiles import spine_profiles
from SpineSegDiffLib.data.phantom.spine import Disc, Segment, body_extent_s, build_spine

# painted planes per sagittal slice: their mean is the partial volume across the slice thickness
SUBSLICES = 3


@dataclass
class Anatomy:
    """Everything drawn for one case before rendering (tests inspect it directly)."""
    grid: Grid  # tissue and label per plane; x holds SUBSLICES planes per slice
    segments: list[Segment]
    discs: list[Disc]
    prof: dict[str, np.ndarray]
    rng: np.random.Generator  # the case's stream, continued by the caller
    spacing: float  # in-plane mm
    slice_spacing: float
    thickness: float
    x: np.ndarray  # slice centres (mm, left-right)
    origin_pos: tuple[float, float]  # (p0, s0): the first column's p and the first row's s
    l_mid: float  # x of the spine's midline at L3
    drawn: dict

    @property
    def label(self) -> np.ndarray:
        """SPIDER labels per sagittal slice (its centre plane), (rows, columns, slices)."""
        return np.ascontiguousarray(self.grid.label[:, :, SUBSLICES // 2::SUBSLICES])


def draw_anatomy(seed: int, index: int) -> Anatomy:
    """Draw and paint the anatomy of case ``index`` of the series ``seed`` (deterministic)."""
    rng = np.random.default_rng([int(seed), int(index), 0])
    segments, discs = build_spine(rng)
    by_name = {seg.name: seg for seg in segments}

    # field of view: T12 top .. S1 bottom always inside, random size and offset
    top = body_extent_s(by_name["T12"])[0] - 8
    bottom = max(body_extent_s(by_name["S1"])[1], body_extent_s(by_name["S2"])[0]) + 8
    fov_s = max(rng.uniform(260, 340), bottom - top + 10)
    spacing = rng.uniform(0.5, 0.9)
    rows = int(math.ceil(fov_s / spacing))
    if rows > 560:  # keep a case within a few seconds on a laptop CPU
        spacing = fov_s / 560
        rows = 560
    fov_s = rows * spacing
    s0 = top - rng.uniform(0, fov_s - (bottom - top))
    canal_p = np.mean([seg.centre[1] + seg.depth / 2 + seg.canal_depth / 2 for seg in segments[:7]])
    fov_p = fov_s * rng.uniform(0.75, 0.95)
    cols = int(math.ceil(fov_p / spacing))
    p_max = canal_p + 47 + 24 + rng.uniform(0, 45)
    p0 = p_max - cols * spacing
    n_slices = int(rng.integers(12, 21))
    slice_spacing = rng.uniform(3.3, 4.5)
    s = s0 + spacing * np.arange(rows)
    p = p0 + spacing * np.arange(cols)
    x = slice_spacing * (np.arange(n_slices) - (n_slices - 1) / 2)
    thickness = slice_spacing * rng.uniform(0.75, 1.0)  # a slice gap of up to a quarter
    offsets = thickness * ((np.arange(SUBSLICES) + 0.5) / SUBSLICES - 0.5)
    x_fine = (x[:, None] + offsets[None, :]).ravel()
    coverage = n_slices * slice_spacing
    midline = rng.uniform(-0.1, 0.1) * coverage
    amplitude, period, phase = rng.uniform(0, 5), rng.uniform(250, 500), rng.uniform(0, 2 * np.pi)
    shift = amplitude * np.sin(2 * np.pi * s / period + phase)  # mild scoliosis
    grid = Grid(s, p, x_fine, shift, midline, SUBSLICES)

    sac_end = by_name["S2"].centre[0] + rng.uniform(-5, 5)
    prof = spine_profiles(segments, discs, s, sac_end, rng)
    back, belly = body_outline(grid, prof, rng)
    paint_abdomen(grid, prof, segments, back, belly, rng)
    drawn = paint_muscles(grid, prof, segments, back, rng)
    paint_canal(grid, prof, segments, discs, rng)
    rim_px = max(1, int(round(1.2 / spacing)))
    for seg in segments:
        paint_posterior_elements(grid, seg, rim_px)
    for seg in segments:
        paint_inferior_articular(grid, seg, rim_px)
    for seg in segments:
        paint_ribs(grid, seg, rim_px)
    for disc in discs:
        paint_disc(grid, disc, rng)
    above = {id(disc.lower): disc.value for disc in discs}  # a body's upper endplate faces this disc
    below = {id(disc.upper): disc.value for disc in discs}
    for seg in segments:
        paint_body(grid, seg, seg.value, above.get(id(seg)), below.get(id(seg)))
    _mark_partial_vertebrae(grid, segments)

    l_mid = shift[np.searchsorted(s, by_name["L3"].centre[0]).clip(0, rows - 1)] + midline
    return Anatomy(grid, segments, discs, prof, rng, spacing, slice_spacing, thickness, x, (p0, s0),
                   float(l_mid), drawn)


def _mark_partial_vertebrae(grid: Grid, segments: list[Segment]) -> None:
    """Vertebrae cut by the field of view get 100 + value (SPIDER); the sacrum never does."""
    top, bottom = grid.s[0], grid.s[-1]
    for seg in segments:
        if seg.value == SACRUM_VALUE:
            continue
        lo, hi = body_extent_s(seg)
        if lo < top or hi > bottom:  # body not wholly inside (its spinous process may be)
            grid.label[grid.label == seg.value] = PARTIAL_VERTEBRA_OFFSET + seg.value
