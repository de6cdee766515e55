"""One phantom case: the anatomy drawn for (seed, index), rendered per sequence, with its SPIDER mask."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.phantom.abdomen import body_outline, paint_abdomen
from SpineSegDiffLib.data.phantom.bones import paint_body, paint_disc
from SpineSegDiffLib.data.phantom.canal import paint_canal
from SpineSegDiffLib.data.phantom.contrast import CONTRASTS, SEQUENCES
from SpineSegDiffLib.data.phantom.grid import Grid, smooth_noise
from SpineSegDiffLib.data.phantom.labels import PARTIAL_VERTEBRA_OFFSET, SACRUM_VALUE
from SpineSegDiffLib.data.phantom.muscles import paint_muscles
from SpineSegDiffLib.data.phantom.posterior_elements import (paint_inferior_articular, paint_posterior_elements,
                                                             paint_ribs)
from SpineSegDiffLib.data.phantom.profiles import spine_profiles
from SpineSegDiffLib.data.phantom.rendering import render, to_image
from SpineSegDiffLib.data.phantom.spine import Segment, body_extent_s, build_spine

# painted planes per sagittal slice: their mean is the partial volume across the slice thickness
SUBSLICES = 3


@dataclass
class PhantomCase:
    """One synthetic case: images per sequence, the SPIDER mask, and what was drawn."""
    patient_id: str
    images: dict[str, sitk.Image]
    mask: sitk.Image
    metadata: dict = field(default_factory=dict)


def check_sequences(sequences: Sequence[str]) -> tuple[str, ...]:
    seqs = tuple(s.strip().lower() for s in sequences if s.strip())
    bad = [s for s in seqs if s not in CONTRASTS]
    if not seqs or bad:
        raise InputError(f"sequences {', '.join(bad) or '(none)'} are not supported by the phantom; "
                         f"use one or more of {', '.join(CONTRASTS)}")
    return tuple(dict.fromkeys(seqs))


def generate_case(seed: int, index: int, sequences: Sequence[str] = SEQUENCES) -> PhantomCase:
    """Draw phantom case ``index`` of the series ``seed`` (deterministic).

    The anatomy depends on (seed, index) only; each sequence's contrast, resolution,
    artefacts and noise have their own random stream, so asking for fewer sequences does
    not change the others. ``sequences``: any of ``CONTRASTS`` (t1, t2, stir, dixon_water,
    dixon_fat, random); "random" draws every tissue's intensity at random (SynthSeg).
    """
    sequences = check_sequences(sequences)
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
    for seg in segments:
        paint_body(grid, seg, seg.value)
    _mark_partial_vertebrae(grid, segments)
    label = np.ascontiguousarray(grid.label[:, :, SUBSLICES // 2::SUBSLICES])  # the slice centre

    spacing_xyz = (slice_spacing, spacing, spacing)
    origin = (x[0] + rng.uniform(-20, 20), p0 + rng.uniform(-40, 40), -s0 + rng.uniform(-60, 60))
    # texture: fine, marrow-like heterogeneity shared by both sequences (same anatomy)
    texture = smooth_noise(rng, label.shape, cell=(2.5 / spacing, 2.5 / spacing, 1.0))
    images, acquisition = {}, {}
    for seq in sequences:
        seq_rng = np.random.default_rng([int(seed), int(index), 1 + CONTRASTS.index(seq)])
        array, acquisition[seq] = render(grid, seq, seq_rng, texture, SUBSLICES, spacing)
        images[seq] = to_image(array, spacing_xyz, origin)
    mask = to_image(label, spacing_xyz, origin)

    present = np.unique(label)
    l_mid = shift[np.searchsorted(s, by_name["L3"].centre[0]).clip(0, rows - 1)] + midline
    metadata = {
        "seed": int(seed), "index": int(index), "sequences": list(sequences),
        "spacing_xyz": list(spacing_xyz), "size_xyz": [n_slices, cols, rows],
        "mid_sagittal_slice": int(np.argmin(np.abs(x - l_mid))),
        "grades": {d.value: d.grade for d in discs if d.value in present},
        "disc_names": {d.value: d.name for d in discs if d.value in present},
        "vertebra_values": [int(v) for v in present if 1 <= v <= 25 or 101 <= v <= 125],
        "disc_values": [int(v) for v in present if 201 <= v <= 225],
        "slice_thickness_mm": round(float(thickness), 3),
        "acquisition": acquisition,
        "anatomy": drawn,
    }
    return PhantomCase(str(index + 1), images, mask, metadata)


def _mark_partial_vertebrae(grid: Grid, segments: list[Segment]) -> None:
    """Vertebrae cut by the field of view get 100 + value (SPIDER); the sacrum never does."""
    top, bottom = grid.s[0], grid.s[-1]
    for seg in segments:
        if seg.value == SACRUM_VALUE:
            continue
        lo, hi = body_extent_s(seg)
        if lo < top or hi > bottom:  # body not wholly inside (its spinous process may be)
            grid.label[grid.label == seg.value] = PARTIAL_VERTEBRA_OFFSET + seg.value
