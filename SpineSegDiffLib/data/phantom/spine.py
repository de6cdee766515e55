"""The chain of vertebral segments and discs (sizes, lordosis, degeneration) in the anatomical frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from SpineSegDiffLib.data.phantom.labels import (
    DISC_OFFSET,
    SACRUM_VALUE,
    VERTEBRA_VALUES,
)

# Pfirrmann: height normal for 1-2, slightly lower for 3, lower for 4, collapsed for 5;
# degenerated discs bulge posteriorly into the canal.
_HEIGHT_BY_GRADE = {1: 1.0, 2: 1.0, 3: 0.88, 4: 0.72, 5: 0.48}
BULGE_MM_BY_GRADE = {1: 0.0, 2: 0.5, 3: 1.5, 4: 3.0, 5: 3.5}

# name, body height, AP depth, LR width, bony canal AP, canal LR, spinous length,
# spinous droop (inferior slope), healthy height of the disc above (mm, adult means)
_LEVELS = (
    ("S1", 27, 36, 50, 16, 26, 14, 0.1, 11),
    ("L5", 26, 36, 50, 19, 25, 24, 0.05, 12),
    ("L4", 27, 36, 49, 19, 23, 28, 0.1, 11),
    ("L3", 27, 35, 47, 18, 22, 28, 0.1, 10),
    ("L2", 26, 34, 45, 18, 21, 28, 0.15, 9),
    ("L1", 25, 32, 42, 18, 21, 27, 0.2, 8),
    ("T12", 24, 30, 38, 17, 19, 26, 0.35, 7),
    ("T11", 22, 28, 35, 15, 18, 26, 0.6, 6),
    ("T10", 21, 27, 33, 15, 17, 26, 0.8, 6),
    ("T9", 20, 26, 32, 15, 17, 26, 0.9, 0),
)
# body height per level, to scale the posterior elements with the vertebra drawn
NOMINAL_HEIGHT: dict[str, float] = {row[0]: float(row[1]) for row in _LEVELS}
# likelihood weight of degeneration per disc, from L5/S1 upwards
_DEGENERATION_PROPENSITY = (1.0, 1.0, 0.7, 0.5, 0.35, 0.25, 0.2, 0.2, 0.2)

@dataclass
class Segment:
    """One vertebral body (or fused sacral segment) in the anatomical frame (mm)."""
    name: str
    value: int
    centre: np.ndarray  # (s, p)
    phi: float  # axis tilt, radians, positive = top leans anteriorly
    height: float
    depth: float
    width: float
    canal_depth: float
    canal_width: float
    spinous_length: float
    spinous_droop: float
    lower_sacral: bool = False

    def axis(self) -> np.ndarray:  # unit vector pointing cranially
        return np.array([-math.cos(self.phi), -math.sin(self.phi)])

    def posterior(self) -> np.ndarray:  # unit vector pointing posteriorly
        return np.array([-math.sin(self.phi), math.cos(self.phi)])


@dataclass
class Disc:
    value: int
    name: str
    upper: Segment
    lower: Segment
    centre: np.ndarray
    phi: float
    height: float
    grade: int

# --- anatomy: the chain of segments ------------------------------------------------
def _grades(rng: np.random.Generator, n_discs: int) -> list[int]:
    degeneration = rng.uniform(0, 1) ** 1.3  # per case: "age"
    grades = []
    for i in range(n_discs):
        mean = 1 + 4.2 * degeneration * _DEGENERATION_PROPENSITY[min(i, 8)]
        grades.append(int(np.clip(round(rng.normal(mean, 0.7)), 1, 5)))
    return grades


def build_spine(rng: np.random.Generator) -> tuple[list[Segment], list[Disc]]:
    size = rng.uniform(0.88, 1.12)
    sacral_slope = math.radians(rng.uniform(30, 46))
    # lumbar lordosis follows the sacral slope (a balanced spine keeps T12 above S1)
    lordosis = math.degrees(sacral_slope) + rng.uniform(4, 20)
    # share of the lordosis reached at each body from S1 up: mostly at L5/S1 and L4/L5
    share = np.array([0, .38, .65, .85, .95, 1.0, 1.03, 1.05, 1.06, 1.07])
    phis = sacral_slope + np.radians(-lordosis * share + rng.normal(0, 1.5, len(_LEVELS)))
    grades = _grades(rng, len(_LEVELS) - 1)

    segments: list[Segment] = []
    discs: list[Disc] = []
    centre = np.zeros(2)
    for i, (name, h, d, w, cd, cw, sl, droop, _disc_above) in enumerate(_LEVELS):
        jitter = rng.uniform(0.96, 1.04, 4)
        seg = Segment(name, VERTEBRA_VALUES[name], centre.copy(), float(phis[i]),
                       h * size * jitter[0], d * size * jitter[1], w * size * jitter[2],
                       cd * rng.uniform(0.9, 1.1), cw * rng.uniform(0.9, 1.1),
                       sl * size * jitter[3], droop)
        if i > 0:  # move the segment above the previous one, across a disc
            below = segments[-1]
            disc_h = _LEVELS[i - 1][8] * size * rng.uniform(0.9, 1.1)
            grade = grades[i - 1]
            disc_h *= _HEIGHT_BY_GRADE[grade]
            disc_phi = 0.5 * (below.phi + seg.phi)
            top = below.centre + below.height / 2 * below.axis()
            u = np.array([-math.cos(disc_phi), -math.sin(disc_phi)])
            disc_centre = top + disc_h / 2 * u
            seg.centre = top + disc_h * u + seg.height / 2 * seg.axis()
            discs.append(Disc(DISC_OFFSET + below.value, f"{name}/{below.name}", seg, below,
                               disc_centre, disc_phi, disc_h, grade))
        segments.append(seg)
        centre = seg.centre
    # the rest of the sacrum: fused, tapering segments curving posteriorly (kyphosis)
    s1 = segments[0]
    previous = s1
    for k, (h, d, w) in enumerate(((20, 31, 40), (17, 25, 32), (14, 19, 24))):
        phi = min(s1.phi + math.radians(10 * (k + 1)), math.radians(70))
        seg = Segment(f"S{k + 2}", SACRUM_VALUE, np.zeros(2), phi, h * size, d * size,
                       w * size, 12 - 2 * k, 20 - 3 * k, 10, 0.2, lower_sacral=True)
        # overlap 3 mm so the fused segments read as one bone, not stacked blocks
        seg.centre = previous.centre - (previous.height / 2 - 3) * previous.axis() - h * size / 2 * seg.axis()
        segments.append(seg)
        previous = seg
    return segments, discs


def body_extent_s(seg: Segment) -> tuple[float, float]:
    corners = [seg.centre + sa * seg.height / 2 * seg.axis() + sb * seg.depth / 2 * seg.posterior()
               for sa in (-1, 1) for sb in (-1, 1)]
    s = [c[0] for c in corners]
    return min(s), max(s)
