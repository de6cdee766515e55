"""The spinal canal and what fills it: epidural fat (thin in front, a posterior fat pad),
the ligamentum flavum lining the back of the canal between the laminae, fat in the
foramina, the thecal sac (CSF; the only soft tissue with a label, the spinal canal), the
conus medullaris and the cauda equina roots."""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.data.phantom.grid import Grid
from SpineSegDiffLib.data.phantom.labels import CANAL_VALUE
from SpineSegDiffLib.data.phantom.profiles import rows
from SpineSegDiffLib.data.phantom.spine import Disc, Segment
from SpineSegDiffLib.data.phantom.tissues import (
    AIR,
    CORD,
    CSF,
    EPIDURAL_FAT,
    LIGAMENT,
    ROOT,
)

FLAVUM_MM = (2.5, 5.0)  # thickness of the ligamentum flavum, normal .. hypertrophic


def paint_canal(grid: Grid, prof: dict, segments: list[Segment], discs: list[Disc],
                rng: np.random.Generator) -> None:
    p = grid.p[None, :, None]
    l = grid.l[:, None, :]
    cosphi = np.cos(rows(prof, "phi"))
    canal_p, canal_r, canal_w = rows(prof, "canal_p"), rows(prof, "canal_r"), rows(prof, "canal_w")
    t = grid.tissue
    body = t != AIR
    # foramina: fat around the exiting roots, lateral to the canal (pedicles painted later)
    lateral = np.abs(l) > canal_w
    foramen = body & lateral & (np.abs(l) < canal_w + 7) & (np.abs(p - canal_p) * cosphi < canal_r + 1)
    t[foramen] = EPIDURAL_FAT
    radial = ((p - canal_p) * cosphi / canal_r) ** 2 + (l / canal_w) ** 2
    canal = radial <= 1
    t[canal] = EPIDURAL_FAT
    # ligamentum flavum: the posterior-lateral rim of the bony canal (laminae painted over it)
    thick = rng.uniform(*FLAVUM_MM)
    inner = ((p - canal_p) * cosphi / np.maximum(canal_r - thick, 0.5)) ** 2 \
        + (l / np.maximum(canal_w - thick, 0.5)) ** 2
    t[canal & (inner > 1) & (p > canal_p + 0.2 * canal_r)] = LIGAMENT
    sac_r = np.maximum(rows(prof, "sac_r"), 1e-3)
    sac_w = np.maximum(rows(prof, "sac_w"), 1e-3)
    sac = (((p - rows(prof, "sac_p")) * cosphi / sac_r) ** 2 + (l / sac_w) ** 2 <= 1) & (sac_r > 0.5)
    t[sac] = CSF
    grid.label[sac] = CANAL_VALUE
    _paint_cord_and_roots(grid, prof, segments, discs, rng)


def _paint_cord_and_roots(grid: Grid, prof: dict, segments: list[Segment], discs: list[Disc],
                          rng: np.random.Generator) -> None:
    """Conus medullaris ending near L1/L2, then dorsally layered cauda equina roots."""
    l1 = next(seg for seg in segments if seg.name == "L1")
    conus_tip = l1.centre[0] + rng.uniform(-5, 1.0) * 5  # T12/L1 .. L2
    # only the columns the sac occupies (speed)
    cols = np.nonzero((grid.label == CANAL_VALUE).any(axis=(0, 2)))[0]
    if cols.size == 0:
        return
    band = slice(int(cols[0]), int(cols[-1]) + 1)
    s = grid.s[:, None, None]
    p = grid.p[band][None, :, None]
    l = grid.l[:, None, :]
    cosphi = np.cos(prof["phi"])[:, None, None]
    sac_p = prof["sac_p"][:, None, None]
    sac_r = prof["sac_r"][:, None, None]
    sac_w = prof["sac_w"][:, None, None]
    in_sac = grid.label[:, band] == CANAL_VALUE
    tissue = grid.tissue[:, band]  # a view: painting it paints the grid
    taper = np.clip((conus_tip - s) / 20.0, 0, 1) ** 0.6
    cord = (((p - sac_p + 0.1 * sac_r) * cosphi / (4.2 * taper + 1e-3)) ** 2
            + (l / (5.0 * taper + 1e-3)) ** 2 <= 1) & (s < conus_tip)
    tissue[cord & in_sac] = CORD
    rows = grid.s > conus_tip - 5
    for _ in range(int(rng.integers(4, 9))):
        off_b, off_l = rng.uniform(0.0, 0.6), rng.uniform(-0.6, 0.6)
        drift = rng.uniform(-0.1, 0.1)
        root = ((((p - sac_p) * cosphi - off_b * sac_r)) ** 2
                + (l - (off_l + drift * (s - conus_tip) / 40) * sac_w) ** 2 <= 0.9 ** 2)
        sel = root & in_sac
        sel[~rows] = False
        tissue[sel] = ROOT
