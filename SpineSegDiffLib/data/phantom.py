"""Synthetic lumbar spine MRI phantoms with full ground truth, written in SPIDER format.

Real training data cannot be downloaded everywhere, so the project draws its own:
T12..S1 (plus whatever of T9..T11 the field of view catches) with vertebral bodies,
posterior elements, discs (nucleus, annulus, Pfirrmann grade 1-5), the thecal sac with
cord / cauda equina, and the soft tissue around them, in T1 and T2 contrast, with
partial volume, a smooth bias field and Rician noise.

Geometry (the same convention as the real data in ``../shared/data/real``):
  * SimpleITK axes: x = left->right (the sagittal slice axis), y = anterior->posterior,
    z = superior->inferior as the index grows; direction diag(1, 1, -1) in LPS, so
    numpy arrays are (z, y, x) and ``array[:, :, i]`` is a sagittal slice with rows
    running superior->inferior and columns anterior->posterior.
  * Spacing (x, y, z) = (slice spacing 3.3-4.5 mm, in-plane 0.5-0.9 mm, same in-plane),
    12-20 slices, a random field of view that always holds T12 top .. S1 bottom.

Internally everything is built in an "anatomical" millimetre frame: ``s`` grows
inferior, ``p`` grows posterior, ``l`` is the left-right distance from the (scoliotic)
spine midline. Each vertebra/disc has a centre and a tilt ``phi`` (how far its axis
leans anteriorly, lordosis), and shapes are signed-distance-like inequalities on
coordinate grids restricted to bounding boxes, so there is no per-voxel Python loop.
Everything is deterministic per ``(seed, case index)``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SpineSegDiffLib.core.atomic import atomic_dir
from SpineSegDiffLib.core.errors import InputError

# --- SPIDER label values: the ONE place the phantom defines them --------------------
# Vertebrae are numbered from the sacrum upwards (1 = S1, the top of the sacrum, which
# carries the whole visible sacrum; 2 = L5, ..., 7 = T12, 8 = T11 ...). A vertebra cut by
# the field of view gets 100 + its number. Discs are 200 + the number of the vertebra
# *below* them (201 = L5/S1, 206 = T12/L1). 100 is the spinal canal (thecal sac).
VERTEBRA_VALUES: dict[str, int] = {"S1": 1, "L5": 2, "L4": 3, "L3": 4, "L2": 5, "L1": 6,
                                   "T12": 7, "T11": 8, "T10": 9, "T9": 10}
CANAL_VALUE = 100
PARTIAL_VERTEBRA_OFFSET = 100
DISC_OFFSET = 200
SACRUM_VALUE = VERTEBRA_VALUES["S1"]
REQUIRED_VERTEBRAE = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")

SEQUENCES = ("t1", "t2")


def disc_value(lower_vertebra: str) -> int:
    """SPIDER value of the disc directly above ``lower_vertebra`` (``"S1"`` -> 201)."""
    return DISC_OFFSET + VERTEBRA_VALUES[lower_vertebra]


def semantic_from_spider_values(mask: np.ndarray) -> np.ndarray:
    """SPIDER values -> semantic labels (1 canal, 2 vertebrae, 3 discs) for previews."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, np.uint8)
    out[mask == CANAL_VALUE] = 1
    out[((mask >= 1) & (mask <= 25)) | ((mask >= 101) & (mask <= 125))] = 2
    out[(mask >= 201) & (mask <= 225)] = 3
    return out


# --- tissues and their contrast ------------------------------------------------------
(AIR, FAT, MUSCLE, VISCERA, BOWEL_FLUID, GAS, VISCERAL_FAT, AORTA, IVC, BLADDER,
 EPIDURAL_FAT, CSF, CORD, ROOT, MARROW, CORTEX, PE_MARROW, ANNULUS, CLEFT, BASIVERTEBRAL,
 LIGAMENT, NUCLEUS_1, NUCLEUS_2, NUCLEUS_3, NUCLEUS_4, NUCLEUS_5) = range(26)
N_TISSUES = 26

# (mean relative to T1 fat, texture amplitude). T1 spin echo: fat brightest, marrow
# intermediate-bright, CSF dark. T2 FSE: CSF and healthy nuclei brightest, fat still
# bright, muscle and annulus dark, degenerated nuclei lose signal (Pfirrmann).
_CONTRAST = {
    "t1": {AIR: (0.0, 0), FAT: (1.0, .06), MUSCLE: (.30, .10), VISCERA: (.36, .3),
           BOWEL_FLUID: (.20, .10), GAS: (.03, 0), VISCERAL_FAT: (.90, .08), AORTA: (.08, .2),
           IVC: (.25, .2), BLADDER: (.12, .05), EPIDURAL_FAT: (.88, .08), CSF: (.14, .05),
           CORD: (.36, .05), ROOT: (.30, .05), MARROW: (.70, .14), CORTEX: (.07, .1),
           PE_MARROW: (.55, .14), ANNULUS: (.30, .08), CLEFT: (.26, .05),
           BASIVERTEBRAL: (.45, .05), LIGAMENT: (.09, .1), NUCLEUS_1: (.38, .05),
           NUCLEUS_2: (.36, .06), NUCLEUS_3: (.33, .08), NUCLEUS_4: (.29, .1),
           NUCLEUS_5: (.22, .12)},
    "t2": {AIR: (0.0, 0), FAT: (.78, .06), MUSCLE: (.17, .12), VISCERA: (.30, .35),
           BOWEL_FLUID: (.85, .1), GAS: (.03, 0), VISCERAL_FAT: (.70, .08), AORTA: (.05, .3),
           IVC: (.30, .3), BLADDER: (1.0, .03), EPIDURAL_FAT: (.70, .08), CSF: (1.0, .04),
           CORD: (.42, .06), ROOT: (.55, .05), MARROW: (.42, .15), CORTEX: (.04, .1),
           PE_MARROW: (.34, .15), ANNULUS: (.13, .1), CLEFT: (.35, .05),
           BASIVERTEBRAL: (.75, .05), LIGAMENT: (.05, .1), NUCLEUS_1: (.95, .05),
           NUCLEUS_2: (.80, .08), NUCLEUS_3: (.50, .12), NUCLEUS_4: (.28, .15),
           NUCLEUS_5: (.12, .15)},
}
_NUCLEUS_BY_GRADE = {1: NUCLEUS_1, 2: NUCLEUS_2, 3: NUCLEUS_3, 4: NUCLEUS_4, 5: NUCLEUS_5}
# Pfirrmann: height normal for 1-2, slightly lower for 3, lower for 4, collapsed for 5;
# degenerated discs bulge posteriorly into the canal.
_HEIGHT_BY_GRADE = {1: 1.0, 2: 1.0, 3: 0.88, 4: 0.72, 5: 0.48}
_BULGE_MM_BY_GRADE = {1: 0.0, 2: 0.5, 3: 1.5, 4: 3.0, 5: 3.5}

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
# likelihood weight of degeneration per disc, from L5/S1 upwards
_DEGENERATION_PROPENSITY = (1.0, 1.0, 0.7, 0.5, 0.35, 0.25, 0.2, 0.2, 0.2)


@dataclass
class _Segment:
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
class _Disc:
    value: int
    name: str
    upper: _Segment
    lower: _Segment
    centre: np.ndarray
    phi: float
    height: float
    grade: int


@dataclass
class PhantomCase:
    """One synthetic case: images per sequence, the SPIDER mask, and what was drawn."""
    patient_id: str
    images: dict[str, sitk.Image]
    mask: sitk.Image
    metadata: dict = field(default_factory=dict)


class _Grid:
    """Voxel coordinates (anatomical mm) and the tissue / label volumes being painted."""

    def __init__(self, s: np.ndarray, p: np.ndarray, x: np.ndarray, shift: np.ndarray,
                 midline: float):
        self.s, self.p, self.x = s, p, x
        # left-right distance from the scoliotic midline, per row and slice
        self.l = x[None, :] - midline - shift[:, None]
        shape = (s.size, p.size, x.size)
        self.tissue = np.full(shape, AIR, np.uint8)
        self.label = np.zeros(shape, np.uint16)

    def box(self, centre, radius_s: float, radius_p: float):
        """Row/column slices of the box around ``centre``; None when it misses the grid."""
        ks = np.searchsorted(self.s, [centre[0] - radius_s, centre[0] + radius_s])
        kp = np.searchsorted(self.p, [centre[1] - radius_p, centre[1] + radius_p])
        if ks[0] >= ks[1] or kp[0] >= kp[1]:
            return None
        return slice(int(ks[0]), int(ks[1])), slice(int(kp[0]), int(kp[1]))

    def local(self, box, origin, phi: float):
        """(a, b, l) of the box voxels in a frame at ``origin`` tilted by ``phi``."""
        ks, kp = box
        ds = (self.s[ks] - origin[0])[:, None]
        dp = (self.p[kp] - origin[1])[None, :]
        c, sn = math.cos(phi), math.sin(phi)
        a = (-ds * c - dp * sn)[:, :, None]
        b = (-ds * sn + dp * c)[:, :, None]
        return a, b, self.l[ks][:, None, :]

    def paint(self, box, mask, tissue: int | None, label: int | None = None) -> None:
        ks, kp = box
        if tissue is not None:
            self.tissue[ks, kp][mask] = tissue
        if label is not None:
            self.label[ks, kp][mask] = label


# --- anatomy: the chain of segments ------------------------------------------------
def _grades(rng: np.random.Generator, n_discs: int) -> list[int]:
    degeneration = rng.uniform(0, 1) ** 1.3  # per case: "age"
    grades = []
    for i in range(n_discs):
        mean = 1 + 4.2 * degeneration * _DEGENERATION_PROPENSITY[min(i, 8)]
        grades.append(int(np.clip(round(rng.normal(mean, 0.7)), 1, 5)))
    return grades


def _build_spine(rng: np.random.Generator) -> tuple[list[_Segment], list[_Disc]]:
    size = rng.uniform(0.88, 1.12)
    sacral_slope = math.radians(rng.uniform(30, 46))
    # lumbar lordosis follows the sacral slope (a balanced spine keeps T12 above S1)
    lordosis = math.degrees(sacral_slope) + rng.uniform(4, 20)
    # share of the lordosis reached at each body from S1 up: mostly at L5/S1 and L4/L5
    share = np.array([0, .38, .65, .85, .95, 1.0, 1.03, 1.05, 1.06, 1.07])
    phis = sacral_slope + np.radians(-lordosis * share + rng.normal(0, 1.5, len(_LEVELS)))
    grades = _grades(rng, len(_LEVELS) - 1)

    segments: list[_Segment] = []
    discs: list[_Disc] = []
    centre = np.zeros(2)
    for i, (name, h, d, w, cd, cw, sl, droop, _disc_above) in enumerate(_LEVELS):
        jitter = rng.uniform(0.96, 1.04, 4)
        seg = _Segment(name, VERTEBRA_VALUES[name], centre.copy(), float(phis[i]),
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
            discs.append(_Disc(DISC_OFFSET + below.value, f"{name}/{below.name}", seg, below,
                               disc_centre, disc_phi, disc_h, grade))
        segments.append(seg)
        centre = seg.centre
    # the rest of the sacrum: fused, tapering segments curving posteriorly (kyphosis)
    s1 = segments[0]
    previous = s1
    for k, (h, d, w) in enumerate(((20, 31, 40), (17, 25, 32), (14, 19, 24))):
        phi = min(s1.phi + math.radians(10 * (k + 1)), math.radians(70))
        seg = _Segment(f"S{k + 2}", SACRUM_VALUE, np.zeros(2), phi, h * size, d * size,
                       w * size, 12 - 2 * k, 20 - 3 * k, 10, 0.2, lower_sacral=True)
        # overlap 3 mm so the fused segments read as one bone, not stacked blocks
        seg.centre = previous.centre - (previous.height / 2 - 3) * previous.axis() - h * size / 2 * seg.axis()
        segments.append(seg)
        previous = seg
    return segments, discs


def _body_extent_s(seg: _Segment) -> tuple[float, float]:
    corners = [seg.centre + sa * seg.height / 2 * seg.axis() + sb * seg.depth / 2 * seg.posterior()
               for sa in (-1, 1) for sb in (-1, 1)]
    s = [c[0] for c in corners]
    return min(s), max(s)


# --- profiles along the spine (canal, body front, back) -----------------------------
def _profiles(segments: list[_Segment], discs: list[_Disc], s: np.ndarray, sac_end_s: float,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-row centre lines and radii of the canal and body front, interpolated."""
    pts = []  # (s, canal p, body front p, canal half-depth, half-width, phi, sac half-depth)
    for seg in segments:
        n = seg.posterior()
        canal = seg.centre + (seg.depth / 2 + seg.canal_depth / 2) * n
        front = seg.centre - seg.depth / 2 * n
        pts.append((canal[0], canal[1], front[1], seg.canal_depth / 2, seg.canal_width / 2, seg.phi))
    for disc in discs:
        depth = 0.5 * (disc.upper.depth + disc.lower.depth)
        n = np.array([-math.sin(disc.phi), math.cos(disc.phi)])
        cd = 0.5 * (disc.upper.canal_depth + disc.lower.canal_depth)
        cw = 0.5 * (disc.upper.canal_width + disc.lower.canal_width)
        canal = disc.centre + (depth / 2 + cd / 2) * n
        front = disc.centre - depth / 2 * n
        pts.append((canal[0], canal[1], front[1], cd / 2, cw / 2, disc.phi))
    pts = np.array(sorted(pts))
    prof = {key: np.interp(s, pts[:, 0], pts[:, i])
            for i, key in enumerate(("canal_p", "front_p", "canal_r", "canal_w", "phi"), start=1)}
    # thecal sac: a little narrower than the bony canal, ends (tapering) in the sacrum
    taper = np.clip((sac_end_s - s) / 25.0, 0, 1) ** 0.5
    prof["sac_r"] = (prof["canal_r"] - rng.uniform(0.3, 1.2)) * taper
    prof["sac_w"] = (prof["canal_w"] - rng.uniform(1.0, 3.0)) * taper
    # sac sits against the front of the bony canal (thin anterior epidural space)
    prof["sac_p"] = prof["canal_p"] - (prof["canal_r"] - prof["sac_r"]) / np.cos(prof["phi"]) * 0.6
    return prof


def _smooth_curve(rng: np.random.Generator, s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A slowly varying random profile over rows (thickness of fat, muscle ...)."""
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(150, 400)
    base = rng.uniform(lo, hi)
    return base + 0.25 * (hi - lo) * np.sin(2 * np.pi * s / period + phase)


def _paint_soft_tissue(grid: _Grid, prof, segments, discs, rng) -> None:
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    l2 = l * l
    cosphi = np.cos(prof["phi"])[:, None, None]
    canal_p = prof["canal_p"][:, None, None]
    front_p = prof["front_p"][:, None, None]
    # back: muscle behind the canal, then subcutaneous fat, then air
    muscle_mm = _smooth_curve(rng, grid.s, 40, 55)[:, None, None]
    fat_mm = _smooth_curve(rng, grid.s, 8, 40)[:, None, None]
    back_muscle = canal_p + muscle_mm - 0.004 * l2 + 0.18 * np.abs(l)
    skin = back_muscle + fat_mm - 0.006 * l2
    belly_depth = _smooth_curve(rng, grid.s, 130, 230)[:, None, None]
    belly = front_p - belly_depth + 0.01 * l2
    belly_fat = _smooth_curve(rng, grid.s, 8, 30)[:, None, None]

    t = grid.tissue
    inside = (p <= skin) & (p >= belly)
    t[inside] = VISCERA
    # viscera: smooth random classes (bowel, fluid-filled loops, gas, mesenteric fat)
    cell = (16.0 / _step(grid.s), 16.0 / _step(grid.p), 2.0)
    anterior = inside & (p < front_p - 6)
    t[anterior & (_smooth_noise(rng, t.shape, cell) > 0.9)] = VISCERAL_FAT
    t[anterior & (_smooth_noise(rng, t.shape, cell) > 1.3)] = BOWEL_FLUID
    t[anterior & (_smooth_noise(rng, t.shape, cell) > 2.0)] = GAS
    t[inside & (p < belly + belly_fat)] = FAT
    # retroperitoneal fat in front of the spine, psoas beside the bodies (from L1 down)
    retro = inside & (p >= front_p - 6) & (p < canal_p)
    t[retro] = VISCERAL_FAT
    l1 = next(seg for seg in segments if seg.name == "L1").centre[0]
    psoas_r = np.clip((s - l1) / 120.0, 0, 1) * 22 + 4
    psoas = (s > l1 - 10) & (np.abs(np.abs(l) - 22 - psoas_r * 0.4) < psoas_r) \
        & (p > front_p - 2 * psoas_r) & (p < canal_p)
    t[psoas] = MUSCLE
    # paraspinal muscles: behind the canal, and beside it from the transverse processes back
    t[(p >= canal_p) & (p <= back_muscle)] = MUSCLE
    lateral = np.abs(l) > prof["canal_w"][:, None, None]
    t[lateral & (p > canal_p - 8) & (p <= back_muscle)] = MUSCLE
    # fatty streaks between muscle bundles, elongated along the spine
    streaks = _smooth_noise(rng, t.shape, (14.0 / _step(grid.s), 3.0 / _step(grid.p), 1.5))
    t[(t == MUSCLE) & (streaks > 1.5)] = FAT
    t[(p > back_muscle) & (p <= skin)] = FAT
    # foramina: fat around the nerve roots, lateral to the canal (pedicles painted later)
    foramen = lateral & (np.abs(l) < prof["canal_w"][:, None, None] + 14) \
        & (np.abs(p - canal_p) * cosphi < prof["canal_r"][:, None, None] + 2)
    t[foramen] = EPIDURAL_FAT
    _paint_vessels(grid, prof, segments, rng)
    _paint_bladder(grid, segments, rng)
    # bony canal: epidural fat, then the thecal sac (CSF, labelled spinal canal)
    canal = ((p - canal_p) * cosphi / prof["canal_r"][:, None, None]) ** 2 \
        + (l / prof["canal_w"][:, None, None]) ** 2 <= 1
    t[canal] = EPIDURAL_FAT
    sac_r = np.maximum(prof["sac_r"], 1e-3)[:, None, None]
    sac_w = np.maximum(prof["sac_w"], 1e-3)[:, None, None]
    sac_p = prof["sac_p"][:, None, None]
    sac = (((p - sac_p) * cosphi / sac_r) ** 2 + (l / sac_w) ** 2 <= 1) & (sac_r > 0.5)
    t[sac] = CSF
    grid.label[sac] = CANAL_VALUE
    _paint_cord_and_roots(grid, prof, segments, discs, rng)


def _paint_vessels(grid: _Grid, prof, segments, rng) -> None:
    """Aorta (flow void) and IVC in front of the spine; the aorta splits at L4."""
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    front_p = prof["front_p"][:, None, None]
    bifurcation = next(seg for seg in segments if seg.name == "L4").centre[0]
    r_a = rng.uniform(8, 11)
    below = np.clip(s - bifurcation, 0, None)
    lc = rng.uniform(12, 22)  # the aorta runs left of the midline
    for side in (1, -1):  # one tube above the bifurcation, two iliacs below
        centre_l = lc + side * 0.45 * below
        radius = np.where(below > 0, 0.7 * r_a, r_a)
        tube = ((p - (front_p - 2 - radius)) ** 2 + (l - centre_l) ** 2) <= radius ** 2
        grid.tissue[tube & (grid.tissue != AIR)] = AORTA
    r_v = rng.uniform(9, 12)
    ivc = (((p - (front_p - 1 - 0.7 * r_v)) / (0.7 * r_v)) ** 2
           + ((l + rng.uniform(12, 20)) / r_v) ** 2 <= 1) & (s < bifurcation + 10)
    grid.tissue[ivc & (grid.tissue != AIR)] = IVC


def _paint_bladder(grid: _Grid, segments, rng) -> None:
    if rng.uniform() < 0.35:
        return
    s3 = segments[-2]
    centre = (s3.centre[0] + rng.uniform(20, 50), s3.centre[1] - rng.uniform(60, 90))
    radius = rng.uniform(25, 45)
    box = grid.box(centre, radius, radius)
    if box is None:
        return
    a, b, l = grid.local(box, centre, 0.0)
    mask = (a / radius) ** 2 + (b / (0.8 * radius)) ** 2 + (l / (1.2 * radius)) ** 2 <= 1
    grid.paint(box, mask & (grid.tissue[box] != AIR), BLADDER)


def _paint_cord_and_roots(grid: _Grid, prof, segments, discs, rng) -> None:
    """Conus medullaris ending near L1/L2, then dorsally layered cauda equina roots."""
    l1 = next(seg for seg in segments if seg.name == "L1")
    conus_tip = l1.centre[0] + rng.uniform(-5, 1.0) * 5  # T12/L1 .. L2
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    cosphi = np.cos(prof["phi"])[:, None, None]
    sac_p = prof["sac_p"][:, None, None]
    sac_r = prof["sac_r"][:, None, None]
    sac_w = prof["sac_w"][:, None, None]
    in_sac = grid.label == CANAL_VALUE
    taper = np.clip((conus_tip - s) / 20.0, 0, 1) ** 0.6
    cord = (((p - sac_p + 0.1 * sac_r) * cosphi / (4.2 * taper + 1e-3)) ** 2
            + (l / (5.0 * taper + 1e-3)) ** 2 <= 1) & (s < conus_tip)
    grid.tissue[cord & in_sac] = CORD
    rows = grid.s > conus_tip - 5
    for _ in range(int(rng.integers(4, 9))):
        off_b, off_l = rng.uniform(0.0, 0.6), rng.uniform(-0.6, 0.6)
        drift = rng.uniform(-0.1, 0.1)
        root = ((((p - sac_p) * cosphi - off_b * sac_r)) ** 2
                + (l - (off_l + drift * (s - conus_tip) / 40) * sac_w) ** 2 <= 0.9 ** 2)
        sel = root & in_sac
        sel[~rows] = False
        grid.tissue[sel] = ROOT


# --- bones and discs -----------------------------------------------------------------
def _blob(grid: _Grid, seg: _Segment, centre_ab, radii, lc: float, exps=(2, 2, 2),
          shear_a: float = 0.0, shear_b: float = 0.0):
    """A superellipsoid in the segment's frame; ``lc`` != 0 mirrors it left and right."""
    ac, bc = centre_ab
    ra, rb, rl = radii
    centre = seg.centre + ac * seg.axis() + bc * seg.posterior()
    reach = max(ra + abs(shear_a) * rb, rb + abs(shear_b) * ra) + 1
    box = grid.box(centre, reach, reach)
    if box is None:
        return None, None
    a, b, l = grid.local(box, centre, seg.phi)
    da = a - shear_a * b
    db = b - shear_b * a
    dl = (np.abs(l) - lc) if lc else l
    q = (np.abs(da) / ra) ** exps[0] + (np.abs(db) / rb) ** exps[1] + (np.abs(dl) / rl) ** exps[2]
    return box, q <= 1


def _paint_bone(grid: _Grid, box, mask, value: int, rim_px: int = 2) -> None:
    """Bone with a dark cortical rim (in-plane erosion) and a marrow core."""
    if box is None or not mask.any():
        return
    core = ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool), iterations=rim_px)
    grid.paint(box, mask, CORTEX, value)
    grid.paint(box, core, PE_MARROW)


def _paint_posterior_elements(grid: _Grid, seg: _Segment, value: int, rim_px: int) -> None:
    h, b0, cd, cw = seg.height, seg.depth / 2, seg.canal_depth, seg.canal_width
    pw = 0.2 * cw + 3  # pedicle width
    parts = []
    if not seg.lower_sacral:
        parts += [
            _blob(grid, seg, (0.18 * h, b0 + 0.35 * cd), (0.3 * h, 0.45 * cd + 3, pw / 2),
                  cw / 2 + pw / 2 - 1, (2, 6, 2)),  # pedicles
            _blob(grid, seg, (0.45 * h, b0 + 0.9 * cd), (0.36 * h, 6, 5.5), cw / 2 + pw / 2 + 1),
            _blob(grid, seg, (-0.5 * h, b0 + cd + 3), (0.34 * h, 6, 5.5), cw / 2 + pw / 2 - 2),
            _blob(grid, seg, (0.15 * h, b0 + 0.4 * cd), (4.5, 5, 13), cw / 2 + pw + 12),
        ]
    parts += [
        _blob(grid, seg, (-0.15 * h, b0 + cd + 3.5), (0.45 * h, 3.5, cw / 2 + 3), 0, (4, 2, 4),
              shear_b=-0.25),  # lamina, sloping posteriorly downwards
        _blob(grid, seg, (-0.2 * h - seg.spinous_droop * seg.spinous_length / 2,
                          b0 + cd + 4 + seg.spinous_length / 2),
              (0.36 * h, seg.spinous_length / 2, 3.8), 0, (4, 4, 2),
              shear_a=-seg.spinous_droop),  # spinous process
    ]
    if seg.name == "S1" or seg.lower_sacral:  # sacral alae: wide lateral masses
        parts.append(_blob(grid, seg, (0, 0.1 * seg.depth), (0.45 * h, 0.5 * seg.depth, 22),
                           cw / 2 + 18, (4, 2, 2)))
    for box, mask in parts:
        _paint_bone(grid, box, mask, value, rim_px)


def _paint_disc(grid: _Grid, disc: _Disc, rng) -> None:
    up, lo = disc.upper, disc.lower
    depth = 0.5 * (up.depth + lo.depth) + 2  # annulus bulges ~1 mm past the endplates
    width = 0.5 * (up.width + lo.width) + 2
    reach = max(depth / 2 + 6, disc.height / 2 + 10)
    box = grid.box(disc.centre, reach, reach)
    if box is None:
        return
    a, b, l = grid.local(box, disc.centre, disc.phi)
    au, _, _ = grid.local(box, up.centre, up.phi)
    al, _, _ = grid.local(box, lo.centre, lo.phi)
    between = (au <= -up.height / 2 + 1.5) & (al >= lo.height / 2 - 1.5)
    bulge = _BULGE_MM_BY_GRADE[disc.grade] * np.exp(-(l / 12.0) ** 2)
    rb = np.where(b > 0, depth / 2 + bulge, depth / 2)
    ring = (np.abs(b) / rb) ** 2.5 + (np.abs(l) / (width / 2)) ** 2
    disc_mask = between & (ring <= 1) & (np.abs(a) < disc.height / 2 + 4)
    grid.paint(box, disc_mask, ANNULUS, disc.value)
    # nucleus: slightly posterior ellipsoid, smaller and darker with degeneration
    shrink = {1: 1.0, 2: 0.95, 3: 0.85, 4: 0.75, 5: 0.6}[disc.grade]
    nucleus = ((a / (0.4 * disc.height + 0.8)) ** 2 + ((b - 0.05 * depth) / (0.34 * depth * shrink)) ** 2
               + (l / (0.3 * width * shrink)) ** 2) <= 1
    grid.paint(box, disc_mask & nucleus, _NUCLEUS_BY_GRADE[disc.grade])
    if disc.grade >= 2:  # intranuclear cleft: a thin dark horizontal band
        grid.paint(box, disc_mask & nucleus & (np.abs(a + rng.uniform(-0.5, 0.5)) < 0.6), CLEFT)


def _paint_body(grid: _Grid, seg: _Segment, value: int) -> None:
    h, d, w = seg.height, seg.depth, seg.width
    box = grid.box(seg.centre, max(h, d) / 2 + 3, max(h, d) / 2 + 3)
    if box is None:
        return
    a, b, l = grid.local(box, seg.centre, seg.phi)

    def shape(cortex: float) -> np.ndarray:
        rb, rl = d / 2 - cortex, w / 2 - cortex
        # flat posterior wall, rounded anterior wall (axial kidney shape)
        g = np.where(b > 0, (b / rb) ** 4, (b / rb) ** 2) + (l / rl) ** 2
        # endplates: slightly concave (disc fills the hollow)
        ha = h / 2 - cortex - 0.8 * np.clip(1 - g, 0, 1)
        return (np.abs(a) / ha) ** 8 + np.clip(g, 0, None) ** 3 <= 1

    outer = shape(0.0)
    inner = shape(1.3)
    grid.paint(box, outer, CORTEX, value)
    grid.paint(box, inner, MARROW)
    if not seg.lower_sacral:  # basivertebral vein: short slit from the posterior wall
        vein = inner & (np.abs(a) < 1.0) & (b > d / 2 - 7) & (np.abs(l) < 4)
        grid.paint(box, vein, BASIVERTEBRAL)


# --- image formation -----------------------------------------------------------------
def _step(axis: np.ndarray) -> float:
    return float(axis[1] - axis[0]) if axis.size > 1 else 1.0


def _zoom_to(array: np.ndarray, shape, order: int) -> np.ndarray:
    zoom = [n / c for n, c in zip(shape, array.shape)]
    out = ndimage.zoom(array, zoom, order=order, grid_mode=True, mode="nearest")
    return out[:shape[0], :shape[1], :shape[2]]


def _smooth_noise(rng: np.random.Generator, shape, cell) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with features about ``cell`` voxels wide.

    Coarse white noise, cubic-upsampled to a quarter-resolution grid (round blobs, no
    polygonal kinks), then linearly to full size (cheap).
    """
    coarse_shape = tuple(max(2, int(math.ceil(n / max(c, 1.0))) + 1) for n, c in zip(shape, cell))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    if max(cell[:2]) > 6:
        middle = tuple(max(c, int(math.ceil(n / 4))) for n, c in zip(shape, coarse_shape))
        coarse = _zoom_to(coarse, middle, order=3)
    field = _zoom_to(coarse, shape, order=1)
    return (field - field.mean()) / (field.std() + 1e-6)


def _render(tissue: np.ndarray, sequence: str, grid: _Grid, rng: np.random.Generator,
            texture: np.ndarray, spacing) -> np.ndarray:
    table = _CONTRAST[sequence]
    means = np.array([table[t][0] for t in range(N_TISSUES)], np.float32)
    amps = np.array([table[t][1] for t in range(N_TISSUES)], np.float32)
    means *= rng.uniform(0.9, 1.1, N_TISSUES).astype(np.float32)  # scanner/patient variation
    image = means[tissue] * (1 + amps[tissue] * texture)
    # partial volume: thick slices and finite in-plane resolution
    sigma = (0.5, 0.5, 0.35)
    image = ndimage.gaussian_filter(image, sigma=sigma, truncate=2.5)
    # smooth multiplicative bias: posterior surface coil fall-off plus low-order terms
    depth_mm = grid.p.max() - grid.p
    coil = 0.45 + 0.55 * np.exp(-depth_mm / rng.uniform(90, 220))
    sn = (grid.s - grid.s.mean()) / (np.ptp(grid.s) + 1e-6)
    pn = (grid.p - grid.p.mean()) / (np.ptp(grid.p) + 1e-6)
    xn = (grid.x - grid.x.mean()) / (np.ptp(grid.x) + 1e-6)
    c = rng.uniform(-0.3, 0.3, 4)
    bias_sp = np.exp(c[0] * sn[:, None] + c[1] * sn[:, None] ** 2 + c[2] * sn[:, None] * pn[None, :]) \
        * coil[None, :]
    bias_x = np.exp(c[3] * xn - 0.3 * xn ** 2)
    image *= (bias_sp[:, :, None] * bias_x[None, None, :]).astype(np.float32)
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels
    sigma_n = np.float32(rng.uniform(0.012, 0.04))
    real = image + sigma_n * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma_n * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag)
    scale = rng.uniform(600, 2400)
    return np.clip(image * scale, 0, 32767).astype(np.int16)


def _to_image(array_zyx: np.ndarray, spacing_xyz, origin_xyz) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(v) for v in spacing_xyz))
    img.SetOrigin(tuple(float(v) for v in origin_xyz))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return img


def _check_sequences(sequences: Sequence[str]) -> tuple[str, ...]:
    seqs = tuple(s.strip().lower() for s in sequences if s.strip())
    bad = [s for s in seqs if s not in SEQUENCES]
    if not seqs or bad:
        raise InputError(f"sequences {', '.join(bad) or '(none)'} are not supported by the phantom; "
                         f"use one or more of {', '.join(SEQUENCES)}")
    return tuple(dict.fromkeys(seqs))


def generate_case(seed: int, index: int, sequences: Sequence[str] = SEQUENCES) -> PhantomCase:
    """Draw phantom case ``index`` of the series ``seed`` (deterministic).

    The anatomy depends on (seed, index) only; each sequence's contrast and noise have
    their own random stream, so asking for fewer sequences does not change the others.
    """
    sequences = _check_sequences(sequences)
    rng = np.random.default_rng([int(seed), int(index), 0])
    segments, discs = _build_spine(rng)
    by_name = {seg.name: seg for seg in segments}

    # field of view: T12 top .. S1 bottom always inside, random size and offset
    top = _body_extent_s(by_name["T12"])[0] - 8
    bottom = max(_body_extent_s(by_name["S1"])[1], _body_extent_s(by_name["S2"])[0]) + 8
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
    coverage = n_slices * slice_spacing
    midline = rng.uniform(-0.1, 0.1) * coverage
    amplitude, period, phase = rng.uniform(0, 5), rng.uniform(250, 500), rng.uniform(0, 2 * np.pi)
    shift = amplitude * np.sin(2 * np.pi * s / period + phase)  # mild scoliosis
    grid = _Grid(s, p, x, shift, midline)

    sac_end = by_name["S2"].centre[0] + rng.uniform(-5, 5)
    prof = _profiles(segments, discs, s, sac_end, rng)
    _paint_soft_tissue(grid, prof, segments, discs, rng)
    rim_px = max(1, int(round(1.2 / spacing)))
    for seg in segments:
        _paint_posterior_elements(grid, seg, seg.value, rim_px)
    for disc in discs:
        _paint_disc(grid, disc, rng)
    for seg in segments:
        _paint_body(grid, seg, seg.value)
    _mark_partial_vertebrae(grid, segments)

    spacing_xyz = (slice_spacing, spacing, spacing)
    origin = (x[0] + rng.uniform(-20, 20), p0 + rng.uniform(-40, 40), -s0 + rng.uniform(-60, 60))
    # texture: fine, marrow-like heterogeneity shared by both sequences (same anatomy)
    texture = _smooth_noise(rng, grid.tissue.shape, cell=(2.5 / spacing, 2.5 / spacing, 1.0))
    images = {}
    for seq in sequences:
        seq_rng = np.random.default_rng([int(seed), int(index), 1 + SEQUENCES.index(seq)])
        images[seq] = _to_image(_render(grid.tissue, seq, grid, seq_rng, texture, spacing_xyz),
                                spacing_xyz, origin)
    mask = _to_image(grid.label, spacing_xyz, origin)

    present = np.unique(grid.label)
    l_mid = shift[np.searchsorted(s, by_name["L3"].centre[0]).clip(0, rows - 1)] + midline
    metadata = {
        "seed": int(seed), "index": int(index), "sequences": list(sequences),
        "spacing_xyz": list(spacing_xyz), "size_xyz": [n_slices, cols, rows],
        "mid_sagittal_slice": int(np.argmin(np.abs(x - l_mid))),
        "grades": {d.value: d.grade for d in discs if d.value in present},
        "disc_names": {d.value: d.name for d in discs if d.value in present},
        "vertebra_values": [int(v) for v in present if 1 <= v <= 25 or 101 <= v <= 125],
        "disc_values": [int(v) for v in present if 201 <= v <= 225],
        # true dimensions (mm) for validating measurements: disc height along its axis at
        # the centre (between the bodies' flat endplate boxes), body height and AP depth
        "disc_height_mm": {d.value: round(d.height, 3) for d in discs if d.value in present},
        "body_height_mm": {seg.value: round(seg.height, 3) for seg in segments[:len(_LEVELS)]},
        "body_depth_mm": {seg.value: round(seg.depth, 3) for seg in segments[:len(_LEVELS)]},
        # _paint_body's endplates dip this far into the body at its centre (discs fill it)
        "endplate_concavity_mm": 0.8,
    }
    return PhantomCase(str(index + 1), images, mask, metadata)


def _mark_partial_vertebrae(grid: _Grid, segments: list[_Segment]) -> None:
    """Vertebrae cut by the field of view get 100 + value (SPIDER); the sacrum never does."""
    top, bottom = grid.s[0], grid.s[-1]
    for seg in segments:
        if seg.value == SACRUM_VALUE:
            continue
        lo, hi = _body_extent_s(seg)
        if lo < top or hi > bottom:  # body not wholly inside (its spinous process may be)
            grid.label[grid.label == seg.value] = PARTIAL_VERTEBRA_OFFSET + seg.value


# --- SPIDER folder -------------------------------------------------------------------
def _csv_text(header: Sequence[str], rows: list[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_spider_folder(out_dir: str | Path, cases: int, seed: int,
                        sequences: Sequence[str] = SEQUENCES,
                        progress: Callable[[int, int, PhantomCase], None] | None = None) -> Path:
    """Write ``cases`` phantoms as a SPIDER-format folder; nothing appears until all are done.

    ``progress(done, total, case)`` is called after each case.
    """
    out = Path(out_dir)
    sequences = _check_sequences(sequences)
    if cases < 1:
        raise InputError(f"--cases {cases}: ask for at least one phantom case")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; pick another folder or remove it")
    if out.is_dir():
        out.rmdir()  # an empty folder is replaced by the finished one
    overview, gradings = [], []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i in range(cases):
            case = generate_case(seed, i, sequences)
            meta = case.metadata
            for seq, image in case.images.items():
                name = f"{case.patient_id}_{seq}"
                sitk.WriteImage(image, str(tmp / "images" / f"{name}.mha"), useCompression=True)
                sitk.WriteImage(case.mask, str(tmp / "masks" / f"{name}.mha"), useCompression=True)
                overview.append([name, case.patient_id, seq, len(meta["vertebra_values"]),
                                 len(meta["disc_values"]), seed, i] + meta["size_xyz"]
                                + [round(v, 4) for v in meta["spacing_xyz"]])
            for value, grade in sorted(meta["grades"].items()):
                gradings.append([case.patient_id, value, meta["disc_names"][value], grade])
            if progress is not None:
                progress(i + 1, cases, case)
        (tmp / "overview.csv").write_text(_csv_text(
            ["new_file_name", "patient_id", "sequence", "num_vertebrae", "num_discs",
             "phantom_seed", "phantom_index", "size_x", "size_y", "size_z",
             "spacing_x", "spacing_y", "spacing_z"], overview), encoding="utf-8")
        (tmp / "radiological_gradings.csv").write_text(_csv_text(
            ["patient_id", "ivd_label", "ivd_name", "pfirrmann_grade"], gradings), encoding="utf-8")
    return out
