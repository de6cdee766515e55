"""Muscles around the lumbar spine and what separates them: multifidus on the laminae beside
the spinous processes, erector spinae lateral to it, quadratus lumborum in front of the
transverse process tips, psoas beside the vertebral bodies (growing from L1 down), their
fascia, random fatty infiltration, and the interspinous / supraspinous ligaments.

Axial sizes follow adult MRI and anatomy references (mm, lumbar): multifidus about 15
(L1) to 27 (L5) wide; erector spinae about 30-35 wide, 30-40 deep; psoas radius about 5 at
L1 to 20-25 at L4/L5; quadratus lumborum about 25 x 15. All of it is background.
"""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.data.phantom.grid import Grid
from SpineSegDiffLib.data.phantom.profiles import rows
from SpineSegDiffLib.data.phantom.spine import Segment
from SpineSegDiffLib.data.phantom.tissues import (
    AIR,
    ERECTOR_SPINAE,
    FASCIA,
    FAT,
    FATTY_MUSCLE,
    LIGAMENT,
    MULTIFIDUS,
    MUSCLE,
    MUSCLES,
    PSOAS,
    QUADRATUS,
)

FASCIA_MM = 1.0


def _level_share(s: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """0 at ``top`` .. 1 at ``bottom`` (clipped), per row."""
    return np.clip((s - top) / (bottom - top), 0, 1)[:, None, None]


def _paint_bundle(grid: Grid, inside: np.ndarray, al: np.ndarray, p: np.ndarray, lc, pc, rl, rp,
                  tissue: int, power: float = 2.5) -> None:
    """A muscle of superelliptic cross-section (|l| mirrored) wrapped in a thin fascia."""
    rl = np.maximum(rl, 0.5)
    rp = np.maximum(rp, 0.5)
    q_in = np.abs((al - lc) / rl) ** power + np.abs((p - pc) / rp) ** power
    q_out = np.abs((al - lc) / (rl + FASCIA_MM)) ** power + np.abs((p - pc) / (rp + FASCIA_MM)) ** power
    t = grid.tissue
    t[inside & (q_out <= 1) & (q_in > 1)] = FASCIA
    t[inside & (q_in <= 1)] = tissue


def paint_muscles(grid: Grid, prof: dict, segments: list[Segment], back: np.ndarray,
                  rng: np.random.Generator) -> dict:
    """Paint the muscles and ligaments; returns what was drawn (fatty infiltration grade)."""
    s = grid.s[:, None, None]
    p = grid.p[None, :, None]
    al = np.abs(grid.l[:, None, :])
    by_name = {seg.name: seg for seg in segments}
    canal_back = rows(prof, "canal_p") + rows(prof, "canal_r")
    lamina = canal_back + 4
    tips = lamina + rows(prof, "spin_len")
    inside = (grid.tissue != AIR) & (p <= back)
    size = rng.uniform(0.8, 1.2)  # muscle bulk of this patient
    lumbar = _level_share(grid.s, by_name["L1"].centre[0], by_name["L5"].centre[0])
    below_s1 = _level_share(grid.s, by_name["S1"].centre[0], by_name["S3"].centre[0])

    # deep muscle (intertransversarii, psoas' posterior fibres) fills the gaps behind the
    # bodies' sides between the transverse processes; the muscles below are painted over it
    deep = inside & (al > rows(prof, "canal_w") + 6) & (p > rows(prof, "canal_p") - rows(prof, "canal_r") - 6) \
        & (p < canal_back + 4) & (al < rows(prof, "body_w") + 30)
    grid.tissue[deep] = MUSCLE
    # psoas: from the T12/L1 disc down, against the bodies' sides, swinging forward below L5
    top = by_name["T12"].centre[0] + by_name["T12"].height / 2
    grow = _level_share(grid.s, top, by_name["L5"].centre[0])
    r = (4 + 18 * grow) * size
    past_l5 = np.clip(s - by_name["L5"].centre[0], 0, None)
    psoas_l = rows(prof, "body_w") + 0.8 * r + 0.4 * past_l5
    psoas_p = rows(prof, "front_p") + 0.5 * rows(prof, "depth") - 0.2 * r - 0.7 * past_l5
    _paint_bundle(grid, inside & (s > top), al, p, psoas_l, psoas_p, r, 0.9 * r, PSOAS, 2.0)
    # quadratus lumborum: 12th rib (T12) to the iliac crest (L5), in front of the transverse tips
    ql = inside & (s > by_name["T12"].centre[0]) & (s < by_name["L5"].centre[0])
    _paint_bundle(grid, ql, al, p, rows(prof, "body_w") + rng.uniform(26, 34), rows(prof, "canal_p") - 6,
                  rng.uniform(9, 14) * size, rng.uniform(6, 9) * size, QUADRATUS)
    # erector spinae (longissimus + iliocostalis) lateral to multifidus; tendinous over the sacrum
    mf_w = (14 + 12 * lumbar) * size * (1 - 0.6 * below_s1)
    es_w = (34 - 8 * lumbar) * size * (1 - 0.8 * below_s1)
    es_front = rows(prof, "canal_p") - 2
    es_back = tips + 3 - 25 * below_s1
    _paint_bundle(grid, inside, al, p, 2 + mf_w + es_w / 2, (es_front + es_back) / 2, es_w / 2,
                  (es_back - es_front) / 2, ERECTOR_SPINAE)
    # multifidus: in the groove between spinous process and facets, on the laminae
    mf_front = lamina - 4
    mf_back = tips + 1
    _paint_bundle(grid, inside, al, p, 3 + mf_w / 2, (mf_front + mf_back) / 2, mf_w / 2,
                  (mf_back - mf_front) / 2, MULTIFIDUS)
    # fatty infiltration: streaks along the fibres, more with age and at the lower levels
    fatty = float(rng.beta(1.3, 4.0))
    streaks = grid.noise(rng, (12.0, 2.5, 4.5))
    muscle = np.isin(grid.tissue, MUSCLES)
    threshold = 2.7 - 2.0 * fatty * (0.5 + lumbar)
    grid.tissue[muscle & (streaks > threshold - 0.5)] = FATTY_MUSCLE
    grid.tissue[muscle & (streaks > threshold)] = FAT
    # midline: interspinous ligament between the spinous processes (painted over by bone
    # later), supraspinous ligament over their tips, the posterior layer of the fascia
    midline = inside & (al < 2.5)
    grid.tissue[midline & (p > lamina) & (p < tips)] = LIGAMENT
    grid.tissue[inside & (al < 4) & (p >= tips) & (p < tips + 3)] = LIGAMENT
    posterior_layer = inside & (p >= tips + 3) & (p < tips + 3 + FASCIA_MM) & (al < 2 + mf_w + es_w)
    grid.tissue[posterior_layer] = FASCIA
    return {"fatty_infiltration": round(fatty, 3), "muscle_size": round(float(size), 3)}
