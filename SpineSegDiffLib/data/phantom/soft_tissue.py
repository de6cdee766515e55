"""Soft tissue: body wall, viscera, vessels, bladder, muscles, the canal and its contents."""

from __future__ import annotations

import math

import numpy as np

from SpineSegDiffLib.data.phantom.grid import (
    Grid,
    axis_step,
    smooth_curve,
    smooth_noise,
)
from SpineSegDiffLib.data.phantom.labels import CANAL_VALUE
from SpineSegDiffLib.data.phantom.spine import Disc, Segment
from SpineSegDiffLib.data.phantom.tissues import (
    AIR,
    AORTA,
    BLADDER,
    BOWEL_FLUID,
    CORD,
    CSF,
    EPIDURAL_FAT,
    FAT,
    GAS,
    IVC,
    MUSCLE,
    ROOT,
    VISCERA,
    VISCERAL_FAT,
)


# --- profiles along the spine (canal, body front, back) -----------------------------
def spine_profiles(segments: list[Segment], discs: list[Disc], s: np.ndarray, sac_end_s: float,
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

def paint_soft_tissue(grid: Grid, prof, segments, discs, rng) -> None:
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    l2 = l * l
    cosphi = np.cos(prof["phi"])[:, None, None]
    canal_p = prof["canal_p"][:, None, None]
    front_p = prof["front_p"][:, None, None]
    # back: muscle behind the canal, then subcutaneous fat, then air
    muscle_mm = smooth_curve(rng, grid.s, 40, 55)[:, None, None]
    fat_mm = smooth_curve(rng, grid.s, 8, 40)[:, None, None]
    back_muscle = canal_p + muscle_mm - 0.004 * l2 + 0.18 * np.abs(l)
    skin = back_muscle + fat_mm - 0.006 * l2
    belly_depth = smooth_curve(rng, grid.s, 130, 230)[:, None, None]
    belly = front_p - belly_depth + 0.01 * l2
    belly_fat = smooth_curve(rng, grid.s, 8, 30)[:, None, None]

    t = grid.tissue
    inside = (p <= skin) & (p >= belly)
    t[inside] = VISCERA
    # viscera: smooth random classes (bowel, fluid-filled loops, gas, mesenteric fat)
    cell = (16.0 / axis_step(grid.s), 16.0 / axis_step(grid.p), 2.0)
    anterior = inside & (p < front_p - 6)
    t[anterior & (smooth_noise(rng, t.shape, cell) > 0.9)] = VISCERAL_FAT
    t[anterior & (smooth_noise(rng, t.shape, cell) > 1.3)] = BOWEL_FLUID
    t[anterior & (smooth_noise(rng, t.shape, cell) > 2.0)] = GAS
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
    streaks = smooth_noise(rng, t.shape, (14.0 / axis_step(grid.s), 3.0 / axis_step(grid.p), 1.5))
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


def _paint_vessels(grid: Grid, prof, segments, rng) -> None:
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


def _paint_bladder(grid: Grid, segments, rng) -> None:
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


def _paint_cord_and_roots(grid: Grid, prof, segments, discs, rng) -> None:
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
