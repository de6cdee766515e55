"""Level labels from a semantic result: each vertebra and disc gets its SPIDER value.

Method (ordering of components, no extra network head): discs are connected components
of the disc label, ordered top to bottom; each disc is a plane (centroid, least-spread
axis). Vertebra voxels are grown geodesically (through the vertebra mask only) from
seeds inside the body between two neighbouring discs, so two vertebrae fused by the
model are split at the disc between them, and posterior elements follow their own body.
Numbering is anchored at the sacrum (the bone below the lowest disc that runs out of
the field of view or is much taller than a body); without it, levels are counted from
the top and the result says so. Values follow SPIDER: 1 = S1, 2 = L5 ... 6 = L1,
7 = T12, 100 + n for a vertebra the field of view cuts, 200 + n for the disc above
vertebra n (201 = L5/S1), 100 = canal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SpineSegDiffLib.measure.frames import crop, nonzero_box, principal_normal, superior_axis, voxel_points
from SpineSegDiffLib.measure.nearest import CANAL_VALUE, DISC_OFFSET, take_nearest_label

PARTIAL_OFFSET = 100
_NAMES_FROM_SACRUM = ("S1", "L5", "L4", "L3", "L2", "L1") + tuple(f"T{k}" for k in range(12, 0, -1))
MIN_DISC_ML = 0.2  # smaller disc components are noise, not discs
MIN_VERTEBRA_ML = 0.5
MIN_DISC_SHARE = 0.2  # a disc component under a fifth of the median disc is a stray piece
MAX_DISC_OFF_MIDLINE_MM = 30.0  # discs sit on the spine: further left or right is a stray piece
SEED_RADIUS_MM = 10.0  # body seeds: a cylinder this wide on the line between two disc centres
GAP_FACTOR = 1.6  # two discs this many times the usual distance apart: a level is in doubt


def vertebra_name(value: int) -> str:
    """SPIDER vertebra value (1..25, or 101..125 partial) -> "S1", "L5", ... ."""
    n = value - PARTIAL_OFFSET if value > PARTIAL_OFFSET else value
    return _NAMES_FROM_SACRUM[n - 1] if 1 <= n <= len(_NAMES_FROM_SACRUM) else f"vertebra {n}"


def disc_name(value: int) -> str:
    """SPIDER disc value (201 = L5/S1) -> "L5/S1"."""
    lower = value - DISC_OFFSET
    return f"{vertebra_name(lower + 1)}/{vertebra_name(lower)}"


def level_name(value: int) -> str:
    if value == CANAL_VALUE:
        return "canal"
    return disc_name(value) if value > DISC_OFFSET else vertebra_name(value)


@dataclass
class Level:
    value: int  # SPIDER value
    name: str  # "L4", "L4/L5"
    kind: str  # "vertebra" | "disc"
    partial: bool
    centroid_lps: list[float]
    volume_ml: float


@dataclass
class LevelResult:
    instances: np.ndarray  # (z, y, x) uint16 SPIDER values on the input geometry
    levels: list[Level]
    anchor: str  # "sacrum" | "top" | "none"
    warnings: list[str] = field(default_factory=list)
    disc_frames: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # value -> (centre, normal)

    def to_json(self) -> dict:
        return {"anchor": self.anchor, "warnings": list(self.warnings),
                "levels": [asdict(level) for level in self.levels]}


def _components(mask: np.ndarray, min_voxels: int) -> list[np.ndarray]:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    out = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):  # each in its own box: no full-volume pass
        if box is not None and sizes[k] >= min_voxels:
            out.append(np.argwhere(labels[box] == k) + np.array([s.start for s in box]))
    return out


def _geodesic_grow(seeds: np.ndarray, allowed: np.ndarray, spacing_zyx: tuple[float, ...],
                   max_steps: int = 400) -> np.ndarray:
    """Grow integer seeds through ``allowed`` (6-connected); the first label to arrive wins.

    Grown on a grid of about 2 mm first (far fewer voxel visits), then mapped back and
    finished with a few full-resolution steps; pieces the coarse grid cut off (thin bone)
    take the nearest label. The cost stays seconds.
    """
    if not allowed.any():
        return seeds.copy()
    box = ndimage.find_objects(allowed.astype(np.uint8))[0]  # work on the spine's bounding box only
    sub_seeds, sub_allowed = seeds[box], allowed[box]
    step = tuple(max(1, int(round(2.0 / s))) if n > 40 else 1 for n, s in zip(sub_allowed.shape, spacing_zyx))
    coarse_view = tuple(slice(None, None, f) for f in step)
    coarse = _grow_box(sub_seeds[coarse_view], sub_allowed[coarse_view], max_steps)
    back = coarse[np.ix_(*[np.arange(n) // f for n, f in zip(sub_allowed.shape, step)])]
    labels_box = np.where(sub_allowed, back, 0).astype(seeds.dtype)
    labels_box[sub_seeds > 0] = sub_seeds[sub_seeds > 0]
    labels_box = _grow_box(labels_box, sub_allowed, max(step) + 2)  # the rims the coarse grid skipped
    missed = sub_allowed & (labels_box == 0)
    if missed.any() and (labels_box > 0).any():  # thin pieces the coarse grid cut off
        take_nearest_label(labels_box, missed, spacing_zyx)
    labels = seeds.copy()
    labels[box] = labels_box
    return labels


def _grow_box(seeds: np.ndarray, allowed: np.ndarray, max_steps: int) -> np.ndarray:
    labels = seeds.astype(np.uint8)  # at most a few dozen segments; uint8 dilates fastest
    cross = ndimage.generate_binary_structure(3, 1)
    for _ in range(max_steps):
        todo = allowed & (labels == 0)
        grown = ndimage.grey_dilation(labels, footprint=cross)
        new = todo & (grown > 0)
        if not new.any():
            break
        labels[new] = grown[new]
    return labels.astype(seeds.dtype)


def label_levels(semantic: sitk.Image) -> LevelResult:
    """SPIDER instance values for a semantic labelmap (1 canal, 2 vertebrae, 3 discs)."""
    full = sitk.GetArrayViewFromImage(semantic)
    box = nonzero_box([full], (2, 2, 2))
    if box is None:
        return LevelResult(np.zeros(full.shape, np.uint16), [], "none",
                           ["no spine found: no vertebra or disc in the result"])
    # everything below works in the spine's box (physical positions kept); only the
    # field-of-view edges (partial vertebrae, sacrum) need the whole image's extent
    result = _label_box(crop(semantic, box), box, full.shape)
    instances = np.zeros(full.shape, np.uint16)
    instances[box] = result.instances
    result.instances = instances
    return result


def _label_box(semantic: sitk.Image, box: tuple[slice, ...], full_shape: tuple[int, ...]) -> LevelResult:
    arr = sitk.GetArrayFromImage(semantic)
    voxel_ml = float(np.prod(semantic.GetSpacing())) / 1000.0
    out = np.zeros(arr.shape, np.uint16)
    out[arr == 1] = CANAL_VALUE
    warnings: list[str] = []
    si_axis, si_sign = superior_axis(semantic)

    discs = []  # (centroid, normal, index array), top to bottom
    for idx in _components(arr == 3, int(np.ceil(MIN_DISC_ML / voxel_ml))):
        pts = voxel_points(semantic, idx)
        discs.append((pts.mean(axis=0), principal_normal(pts), idx))
    discs.sort(key=lambda d: -d[0][2])  # LPS z grows superiorly
    if len(discs) >= 3:  # false-positive pieces: much smaller than a disc, or beside the spine
        sizes = np.array([len(d[2]) for d in discs])
        lr = np.array([d[0][0] for d in discs])
        midline = float(np.median(lr[sizes >= np.median(sizes)]))
        keep = (sizes >= MIN_DISC_SHARE * np.median(sizes)) & (np.abs(lr - midline) <= MAX_DISC_OFF_MIDLINE_MM)
        if not keep.all():
            warnings.append(f"{int((~keep).sum())} small or off-midline disc-labelled piece(s) got no level")
        discs = [d for d, k in zip(discs, keep) if k]
    vert = arr == 2
    min_vert = int(np.ceil(MIN_VERTEBRA_ML / voxel_ml))
    if not vert.any() and not discs:
        return LevelResult(out, [], "none", ["no spine found: no vertebra or disc in the result"])

    spacing = [float(np.linalg.norm(discs[i][0] - discs[i + 1][0])) for i in range(len(discs) - 1)]
    typical = float(np.median(spacing)) if spacing else 38.0  # an adult lumbar body + disc
    # a gap of about n spacings holds n - 1 discs the result missed: put virtual discs there
    # (no voxels) so the vertebrae between are split and the numbering above stays right
    gaps = []  # (upper real disc, lower real disc, missing count), in the final disc order
    if len(spacing) > 1:
        filled = [discs[0]]
        for i, gap in enumerate(spacing):
            upper, lower = discs[i], discs[i + 1]
            missing = int(round(gap / typical)) - 1 if gap > GAP_FACTOR * typical else 0
            for m in range(1, missing + 1):
                f = m / (missing + 1)
                normal = (1 - f) * upper[1] + f * lower[1]
                filled.append(((1 - f) * upper[0] + f * lower[0], normal / np.linalg.norm(normal), None))
            if missing:
                gaps.append((len(filled) - missing - 1, len(filled), missing, gap / typical))
            filled.append(lower)
        discs = filled
    nd = len(discs)
    seg_labels = np.zeros(arr.shape, np.int32)  # segment k + 1: k = discs above it
    vidx = np.argwhere(vert)
    if nd == 0:
        warnings.append("no discs in view: vertebrae are taken one per connected component, "
                        "fused ones cannot be split")
        comps = _components(vert, min_vert)
        comps.sort(key=lambda c: -voxel_points(semantic, c).mean(axis=0)[2])
        for k, c in enumerate(comps):
            seg_labels[tuple(c.T)] = k + 1
        n_segments = len(comps)
    else:
        n_segments = nd + 1
        vpts = voxel_points(semantic, vidx) if len(vidx) else np.zeros((0, 3))
        seeds = np.zeros(arr.shape, np.int32)
        for k in range(n_segments):
            below = discs[k][0] if k < nd else discs[nd - 1][0] - typical * discs[nd - 1][1]
            above = discs[k - 1][0] if k > 0 else discs[0][0] + typical * discs[0][1]
            axis = above - below
            t = ((vpts - below) @ axis) / float(axis @ axis)
            pick = np.flatnonzero((t > 0.2) & (t < 0.8))  # the slab first: the radius only there
            radial = np.linalg.norm(vpts[pick] - below - t[pick, None] * axis, axis=1)
            pick = pick[radial < SEED_RADIUS_MM]
            seeds[tuple(vidx[pick].T)] = k + 1
        seg_labels = _geodesic_grow(seeds, vert, tuple(float(v) for v in semantic.GetSpacing()[::-1]))
        # vertebra pieces no seed reached: the segment their centre lies in (count disc planes above)
        for c in _components(vert & (seg_labels == 0), 1):
            centre = voxel_points(semantic, c).mean(axis=0)
            k = sum(1 for centroid, normal, _ in discs if (centre - centroid) @ normal < 0)
            seg_labels[tuple(c.T)] = k + 1

    # which segments hold a vertebra, and does the lowest one look like the sacrum?
    present = [k for k in range(n_segments) if (seg_labels == k + 1).sum() >= min_vert]
    along = np.arange(arr.shape[si_axis]) + box[si_axis].start  # index in the whole image
    view = [1, 1, 1]
    view[si_axis] = -1
    edge_lo = np.broadcast_to((along < 2).reshape(view), arr.shape)  # the whole image's first two slices
    edge_hi = np.broadcast_to((along >= full_shape[si_axis] - 2).reshape(view), arr.shape)
    inferior_edge, superior_edge = (edge_lo, edge_hi) if si_sign > 0 else (edge_hi, edge_lo)
    anchor = "top"
    lowest = n_segments - 1
    if nd > 0 and lowest in present:
        low = seg_labels == lowest + 1
        extent_below = -((voxel_points(semantic, np.argwhere(low)) - discs[-1][0]) @ discs[-1][1]).min()
        if (low & inferior_edge).any() or extent_below > 1.3 * typical:
            anchor = "sacrum"
    if anchor == "sacrum":
        value_of = {k: n_segments - k for k in range(n_segments)}  # lowest segment = 1 (S1)
    else:
        whole = [k for k in present if not ((seg_labels == k + 1) & (inferior_edge | superior_edge)).any()]
        first = whole[0] if whole else (present[0] if present else 0)
        top_value = 7 if len(whole) >= 6 else 6  # T12 when T12..L5 fit, else L1
        value_of = {k: top_value - (k - first) for k in range(n_segments)}
        if present:
            warnings.append(f"sacrum not in view: levels counted from the top, taking the top whole "
                            f"vertebra as {vertebra_name(top_value)}; every level is in doubt")
    if any(v < 1 for v in value_of.values()):
        shift = 1 - min(value_of.values())
        value_of = {k: v + shift for k, v in value_of.items()}
        warnings.append("more vertebrae below the assumed top than a lumbar spine has: numbering shifted, "
                        "levels in doubt")

    for upper_i, lower_i, missing, ratio in gaps:  # named only now that the numbering is known
        upper, lower = disc_name(DISC_OFFSET + value_of[upper_i + 1]), disc_name(DISC_OFFSET + value_of[lower_i + 1])
        doubt = ", ".join(vertebra_name(value_of[k]) for k in present if k <= lower_i)
        warnings.append(f"the {upper} and {lower} discs are {ratio:.1f}x the usual distance apart: "
                        f"{missing} disc(s) between them not found and assumed halfway (or vertebrae fused, "
                        f"transitional anatomy?); levels in doubt: {doubt}")
    levels: list[Level] = []
    for k in present:
        region = seg_labels == k + 1
        value = value_of[k]
        partial = value != 1 and bool((region & (inferior_edge | superior_edge)).any())
        out[region] = PARTIAL_OFFSET + value if partial else value
        idx = np.argwhere(region)
        levels.append(Level(int(out[tuple(idx[0])]), vertebra_name(value), "vertebra", partial,
                            [round(float(v), 2) for v in voxel_points(semantic, idx).mean(axis=0)],
                            round(len(idx) * voxel_ml, 3)))
    frames = {}
    for i, (centroid, normal, idx) in enumerate(discs):
        if idx is None:  # a virtual disc: nothing to label
            continue
        value = DISC_OFFSET + value_of[i + 1]
        out[tuple(idx.T)] = value
        frames[value] = (centroid, normal)
        levels.append(Level(value, disc_name(value), "disc", False,
                            [round(float(v), 2) for v in centroid], round(len(idx) * voxel_ml, 3)))
    if len(present) == 1:
        warnings.append("one vertebra only: no level can be checked against its neighbours")
    return LevelResult(out, levels, anchor, warnings, frames)
