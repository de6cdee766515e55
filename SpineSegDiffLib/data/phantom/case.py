"""One phantom case: the anatomy drawn for (seed, index), rendered per sequence, with its SPIDER mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.phantom.anatomy import SUBSLICES, draw_anatomy
from SpineSegDiffLib.data.phantom import bones
from SpineSegDiffLib.data.phantom.contrast import CONTRASTS, SEQUENCES
from SpineSegDiffLib.data.phantom.grid import smooth_noise
from SpineSegDiffLib.data.phantom.rendering import render, to_image
from SpineSegDiffLib.data.phantom.spine import _LEVELS


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
    anatomy = draw_anatomy(seed, index)
    rng, spacing, grid = anatomy.rng, anatomy.spacing, anatomy.grid
    label = anatomy.label
    p0, s0 = anatomy.origin_pos
    x = anatomy.x
    spacing_xyz = (anatomy.slice_spacing, spacing, spacing)
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
    discs = anatomy.discs
    metadata = {
        "seed": int(seed), "index": int(index), "sequences": list(sequences),
        "spacing_xyz": list(spacing_xyz), "size_xyz": [label.shape[2], label.shape[1], label.shape[0]],
        "mid_sagittal_slice": int(np.argmin(np.abs(x - anatomy.l_mid))),
        "grades": {d.value: d.grade for d in discs if d.value in present},
        "disc_names": {d.value: d.name for d in discs if d.value in present},
        "vertebra_values": [int(v) for v in present if 1 <= v <= 25 or 101 <= v <= 125],
        "disc_values": [int(v) for v in present if 201 <= v <= 225],
        "slice_thickness_mm": round(float(anatomy.thickness), 3),
        "acquisition": acquisition,
        "anatomy": anatomy.drawn,
        # true dimensions (mm) for validating measurements: disc height along its axis at
        # the centre (between the bodies' flat endplate boxes), body height and AP depth
        "disc_height_mm": {d.value: round(d.height, 3) for d in discs if d.value in present},
        "body_height_mm": {seg.value: round(seg.height, 3) for seg in anatomy.segments[:len(_LEVELS)]},
        "body_depth_mm": {seg.value: round(seg.depth, 3) for seg in anatomy.segments[:len(_LEVELS)]},
        # the bodies' endplates dip this far into the body at its centre (discs fill it; bones.py)
        "endplate_concavity_mm": 0.8,
        # the endplate layer this thick facing a disc is labelled disc, not vertebra (bones.py)
        "endplate_label_inset_mm": bones.ENDPLATE_LABEL_INSET_MM,
    }
    return PhantomCase(str(index + 1), images, mask, metadata)
