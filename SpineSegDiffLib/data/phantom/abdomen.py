"""The body around the spine, in front and at the sides: body outline with subcutaneous
fat, the peritoneal cavity with bowel loops (wall, fluid, gas) and mesenteric fat,
retroperitoneal fat, kidneys, aorta / iliac arteries, IVC and bladder. None of it is labelled."""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.data.phantom.grid import (
    Grid,
    smooth_curve,
)
from SpineSegDiffLib.data.phantom.profiles import rows
from SpineSegDiffLib.data.phantom.spine import Segment
from SpineSegDiffLib.data.phantom.tissues import (
    AIR,
    AORTA,
    BLADDER,
    BOWEL_FLUID,
    BOWEL_WALL,
    FAT,
    GAS,
    IVC,
    KIDNEY,
    VISCERA,
    VISCERAL_FAT,
)


def body_outline(grid: Grid, prof: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(back skin, belly skin) p per row and slice: the back follows the spinous tips."""
    l2 = grid.l[:, None, :] ** 2
    tips = rows(prof, "canal_p") + rows(prof, "canal_r") + 4 + rows(prof, "spin_len")
    fat_mm = smooth_curve(rng, grid.s, 6, 40)[:, None, None]
    back = tips + 8 + fat_mm - 0.004 * l2
    belly = rows(prof, "front_p") - smooth_curve(rng, grid.s, 130, 230)[:, None, None] + 0.01 * l2
    return back, belly


def paint_abdomen(grid: Grid, prof: dict, segments: list[Segment], back: np.ndarray, belly: np.ndarray,
                  rng: np.random.Generator) -> None:
    p = grid.p[None, :, None]
    front_p = rows(prof, "front_p")
    t = grid.tissue
    inside = (p <= back) & (p >= belly)
    t[inside] = FAT  # subcutaneous and intermuscular fat; organs and muscles are painted over it
    belly_fat = smooth_curve(rng, grid.s, 8, 30)[:, None, None]
    cavity = inside & (p >= belly + belly_fat) & (p < front_p - 6)
    t[cavity] = VISCERA
    # bowel loops: the zero set of a smooth random field is a tangle of tubes
    tubes = np.abs(grid.noise(rng, (22.0, 22.0, 9.0)))
    contents = grid.noise(rng, (22.0, 22.0, 9.0))
    t[cavity & (tubes < 0.42)] = BOWEL_WALL
    lumen = cavity & (tubes < 0.3)
    t[lumen] = BOWEL_FLUID
    t[lumen & (contents > 0.6)] = VISCERA  # faeces / collapsed loops
    t[lumen & (contents > 1.4)] = GAS
    t[cavity & (tubes > 1.2) & (contents < -0.3)] = VISCERAL_FAT  # mesentery
    # retroperitoneal fat in front of and beside the bodies (behind them: muscles, foramina)
    t[inside & (p >= front_p - 6) & (p < front_p + 0.6 * rows(prof, "depth"))] = VISCERAL_FAT
    _paint_kidneys(grid, prof, segments, rng)
    _paint_vessels(grid, prof, segments, rng)
    _paint_bladder(grid, segments, rng)


def _paint_kidneys(grid: Grid, prof: dict, segments: list[Segment], rng: np.random.Generator) -> None:
    """Both kidneys beside T12..L3, hilum near L1/L2; their medial pole reaches the lateral slices."""
    by_name = {seg.name: seg for seg in segments}
    for side in (1, -1):
        s_c = by_name["L1"].centre[0] + rng.uniform(0, 20) + (8 if side < 0 else 0)  # the right sits lower
        k = int(np.clip(np.searchsorted(grid.s, s_c), 0, grid.s.size - 1))
        centre = (s_c, prof["canal_p"][k] - rng.uniform(8, 18))
        box = grid.box(centre, 60, 30)
        if box is None:
            continue
        a, b, l = grid.local(box, centre, 0.0)
        r_s, r_p, r_l = rng.uniform(48, 58), rng.uniform(18, 24), rng.uniform(25, 32)
        lc = side * rng.uniform(58, 68)
        mask = (a / r_s) ** 2 + (b / r_p) ** 2 + ((l - lc) / r_l) ** 2 <= 1
        grid.paint(box, mask & (grid.tissue[box] != AIR), KIDNEY)


def _paint_vessels(grid: Grid, prof, segments, rng) -> None:
    """Aorta (flow void) and IVC in front of the spine; the aorta splits at L4."""
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    front_p = rows(prof, "front_p")
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
