"""Posterior elements with adult proportions: pedicles, laminae, spinous and transverse
processes, superior / inferior articular processes meeting in facet joints (a thin
joint space, unlabelled), the sacral alae, and the lower ribs at T11/T12 (unlabelled bone).

Sizes in mm at a nominal adult (scaled with the vertebra): pedicle width (left-right)
about 8 at L1 to 17 at L5 and 14-16 high; transverse processes reach 10-20 beyond the
pedicle (longest at L3, rudimentary at T12); laminae 6-7 thick; spinous processes about
25-30 long, 7-8 wide; articular processes about 14 high, 10 deep, 9 wide, the joints
about 25 (L1) to 40 (L5) apart.
"""

from __future__ import annotations

from SpineSegDiffLib.data.phantom.bones import blob, paint_bone
from SpineSegDiffLib.data.phantom.grid import Grid
from SpineSegDiffLib.data.phantom.spine import NOMINAL_HEIGHT, Segment
from SpineSegDiffLib.data.phantom.tissues import ILIUM_MARROW, JOINT_FLUID

# pedicle width, pedicle height, transverse process length beyond the pedicle (mm)
PEDICLES: dict[str, tuple[float, float, float]] = {
    "T9": (7.0, 15.0, 16.0), "T10": (7.5, 15.5, 15.0), "T11": (8.0, 16.0, 10.0), "T12": (8.0, 16.0, 6.0),
    "L1": (8.0, 15.5, 12.0), "L2": (9.0, 15.0, 15.0), "L3": (10.5, 15.0, 20.0), "L4": (12.5, 14.0, 17.0),
    "L5": (17.0, 14.0, 14.0), "S1": (18.0, 14.0, 0.0),
}
JOINT_MM = 1.2  # facet joint space (cartilage and fluid)


def _facet_lateral(seg: Segment, pedicle_w: float) -> float:
    """Distance of the articular pillar from the midline."""
    return seg.canal_width / 2 + 0.4 * pedicle_w + 2


def paint_posterior_elements(grid: Grid, seg: Segment, rim_px: int) -> None:
    """Pedicles, pillar, superior articular processes, laminae, spinous and transverse processes."""
    value = seg.value
    h, b0, cd, cw = seg.height, seg.depth / 2, seg.canal_depth, seg.canal_width
    scale = seg.height / NOMINAL_HEIGHT.get(seg.name, seg.height)
    parts = []
    if not seg.lower_sacral:
        pw, ph, tp = (v * scale for v in PEDICLES[seg.name])
        lc_ped = cw / 2 + pw / 2 - 0.5
        lf = _facet_lateral(seg, pw)
        parts += [
            blob(grid, seg, (0.2 * h, b0 + cd / 2 - 1), (ph / 2, cd / 2 + 1.5, pw / 2), lc_ped, (2, 4, 2)),
            # pars interarticularis: the pillar joining pedicle, lamina and both articular processes
            blob(grid, seg, (-0.05 * h, b0 + cd + 1), (0.4 * h, 5, 4.5), lf, (2.5, 2, 2)),
            # superior articular process: up towards the vertebra above, lateral to its inferior one
            blob(grid, seg, (0.5 * h + 2, b0 + cd), (7 * scale, 5, 4.5), lf + 2.5),
        ]
        if tp > 0:  # transverse processes from the pedicle-pillar junction, tips rounded
            reach = (pw / 2 + tp) / 2
            parts.append(blob(grid, seg, (0.15 * h, b0 + 0.7 * cd), (5 * scale, 3, reach), lc_ped + reach,
                              (2, 2, 3)))
    parts += [
        blob(grid, seg, (-0.15 * h, b0 + cd + 3.5), (0.45 * h, 3.5, cw / 2 + 3), 0, (4, 2, 4),
             shear_b=-0.25),  # lamina, sloping posteriorly downwards
        blob(grid, seg, (-0.2 * h - seg.spinous_droop * seg.spinous_length / 2,
                         b0 + cd + 4 + seg.spinous_length / 2),
             (0.36 * h, seg.spinous_length / 2, 3.8), 0, (4, 4, 2),
             shear_a=-seg.spinous_droop),  # spinous process
    ]
    if seg.name == "S1" or seg.lower_sacral:  # sacral alae: wide lateral masses
        parts.append(blob(grid, seg, (0, 0.1 * seg.depth), (0.45 * h, 0.5 * seg.depth, 22),
                          cw / 2 + 18, (4, 2, 2)))
    for box, mask in parts:
        paint_bone(grid, box, mask, value, rim_px)


def paint_inferior_articular(grid: Grid, seg: Segment, rim_px: int) -> None:
    """Inferior articular processes, medial and posterior to the superior ones below them,
    with the facet joint space around them (painted after every vertebra's superior ones)."""
    if seg.lower_sacral or seg.name == "S1":
        return
    scale = seg.height / NOMINAL_HEIGHT.get(seg.name, seg.height)
    pw = PEDICLES[seg.name][0] * scale
    h, b0, cd = seg.height, seg.depth / 2, seg.canal_depth
    centre, lf = (-0.5 * h - 2, b0 + cd + 2), _facet_lateral(seg, pw) - 1.5
    radii = (7 * scale, 5, 4.5)
    reach = max(radii) + JOINT_MM + 1
    box, joint = blob(grid, seg, centre, tuple(r + JOINT_MM for r in radii), lf, reach=reach)
    if box is None:
        return
    _, process = blob(grid, seg, centre, radii, lf, reach=reach)
    labelled = grid.label[box] > 0
    grid.paint(box, joint & ~process & labelled, JOINT_FLUID, 0)  # the joint space is not bone
    paint_bone(grid, box, process, seg.value, rim_px)


def paint_ribs(grid: Grid, seg: Segment, rim_px: int) -> None:
    """T11/T12 ribs: from the body's side past the transverse process, laterally and down.
    Unlabelled bone beside the spine, so bone-like signal there is not called vertebra."""
    if seg.name not in ("T11", "T12"):
        return
    h, b0 = seg.height, seg.depth / 2
    length = 5 if seg.name == "T12" else 7  # pieces of ~9 mm: the 12th rib is the short one
    for k in range(length):
        lat = seg.width / 2 + 2 + 9 * k
        a = 0.25 * h - 3.0 * k
        b = b0 - 4 + min(k, 3) * 6 - max(0, k - 3) * 3
        box, mask = blob(grid, seg, (a, b), (4.5, 4.0, 6.0), lat)
        if box is not None:
            # only where nothing is labelled yet: ribs never overwrite vertebra
            paint_bone(grid, box, mask & (grid.label[box] == 0), 0, rim_px, marrow=ILIUM_MARROW)


