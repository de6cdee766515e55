"""Per-row profiles along the spine (canal, body front and width, spinous length), so soft
tissue can be painted row by row relative to the (curved, tilted) column."""

from __future__ import annotations

import math

import numpy as np

from SpineSegDiffLib.data.phantom.spine import Disc, Segment

PROFILE_KEYS = ("canal_p", "front_p", "canal_r", "canal_w", "phi", "body_w", "depth", "spin_len")


def spine_profiles(segments: list[Segment], discs: list[Disc], s: np.ndarray, sac_end_s: float,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-row centre lines and radii of the canal and body (mm), interpolated between levels."""
    pts = []  # one tuple per segment and disc, in PROFILE_KEYS order after s
    for seg in segments:
        n = seg.posterior()
        canal = seg.centre + (seg.depth / 2 + seg.canal_depth / 2) * n
        front = seg.centre - seg.depth / 2 * n
        pts.append((canal[0], canal[1], front[1], seg.canal_depth / 2, seg.canal_width / 2, seg.phi,
                    seg.width / 2, seg.depth, seg.spinous_length))
    for disc in discs:
        up, lo = disc.upper, disc.lower
        depth = 0.5 * (up.depth + lo.depth)
        n = np.array([-math.sin(disc.phi), math.cos(disc.phi)])
        cd = 0.5 * (up.canal_depth + lo.canal_depth)
        cw = 0.5 * (up.canal_width + lo.canal_width)
        canal = disc.centre + (depth / 2 + cd / 2) * n
        front = disc.centre - depth / 2 * n
        pts.append((canal[0], canal[1], front[1], cd / 2, cw / 2, disc.phi, 0.25 * (up.width + lo.width),
                    depth, 0.5 * (up.spinous_length + lo.spinous_length)))
    pts = np.array(sorted(pts))
    prof = {key: np.interp(s, pts[:, 0], pts[:, i]) for i, key in enumerate(PROFILE_KEYS, start=1)}
    # thecal sac: a little narrower than the bony canal, ends (tapering) in the sacrum
    taper = np.clip((sac_end_s - s) / 25.0, 0, 1) ** 0.5
    prof["sac_r"] = (prof["canal_r"] - rng.uniform(0.3, 1.2)) * taper
    prof["sac_w"] = (prof["canal_w"] - rng.uniform(1.0, 3.0)) * taper
    # sac sits against the front of the bony canal (thin anterior epidural space)
    prof["sac_p"] = prof["canal_p"] - (prof["canal_r"] - prof["sac_r"]) / np.cos(prof["phi"]) * 0.6
    return prof


def rows(prof: dict[str, np.ndarray], key: str) -> np.ndarray:
    """A profile shaped to broadcast against (rows, columns, slices) arrays."""
    return prof[key][:, None, None]
