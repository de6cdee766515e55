"""Per-level measurements on one instance labelmap, in physical units (mm, mm², ml).

Measured on the input's geometry: heights and diameters are read on planes resampled
(linearly, 0.5 mm pixels) in a frame fixed to the anatomy (a disc's least-spread axis,
the line between two disc centres), volumes count voxels times the physical voxel
volume; so an oblique or anisotropic image gives the same numbers as a resampled copy.

A measurement that cannot be made is ``None`` with a reason, never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SpineSegDiffLib.measure.frames import (
    PLANE_STEP_MM,
    Frame,
    principal_normal,
    resample_plane,
    voxel_points,
)
from SpineSegDiffLib.measure.levels import CANAL_VALUE, DISC_OFFSET, PARTIAL_OFFSET, level_name

# key -> (unit, what it is)
MEASURES: dict[str, tuple[str, str]] = {
    "disc_height_anterior_mm": ("mm", "disc height at 15 % of its depth from the front, mid-sagittal plane"),
    "disc_height_middle_mm": ("mm", "disc height at the middle of its depth, mid-sagittal plane"),
    "disc_height_posterior_mm": ("mm", "disc height at 85 % of its depth from the front, mid-sagittal plane"),
    "disc_volume_ml": ("ml", "disc volume"),
    "disc_csf_signal_ratio": ("ratio", "mean disc signal / mean canal signal at that level (mid-sagittal disc, axial canal)"),
    "canal_ap_diameter_mm": ("mm", "canal antero-posterior diameter in the disc's axial plane"),
    "canal_area_mm2": ("mm2", "canal cross-sectional area in the disc's axial plane"),
    "body_height_anterior_mm": ("mm", "vertebral body height at 15 % of its depth, mid-sagittal plane"),
    "body_height_middle_mm": ("mm", "vertebral body height at the middle of its depth"),
    "body_height_posterior_mm": ("mm", "vertebral body height at 85 % of its depth"),
    "body_wedge_ratio": ("ratio", "anterior / posterior body height"),
    "body_depth_mm": ("mm", "vertebral body antero-posterior depth, mid-sagittal plane"),
    "body_volume_ml": ("ml", "vertebral body volume (the vertebra in front of its posterior wall)"),
    "slip_mm": ("mm", "forward slip of this vertebra's posterior wall over the one below, along the disc plane"),
    "slip_percent": ("%", "slip as a share of the lower body's depth"),
    "meyerding_grade": ("grade", "Meyerding grade 1-5 (0: slip under 10 %)"),
}
DISC_MEASURES = [k for k in MEASURES if k.startswith(("disc_", "canal_"))]
BODY_MEASURES = [k for k in MEASURES if k.startswith("body_")]
SLIP_MEASURES = ["slip_mm", "slip_percent", "meyerding_grade"]
_FRACTIONS = {"anterior": 0.15, "middle": 0.5, "posterior": 0.85}
NO_SLIP_PERCENT = 10.0  # below this a slip reads as none (grade 0): a wall is only known to 1-2 mm


@dataclass
class Value:
    value: float | None
    why: str | None = None  # why there is no value, or what to know about it


Measured = dict[tuple[int, str], Value]


def _nearest_component(mask2d: np.ndarray, centre_rc: tuple[float, float]) -> tuple[np.ndarray | None, str | None]:
    """The 2-D connected component closest to ``centre_rc`` with its holes filled (or
    None), and a note when it had holes."""
    labels, count = ndimage.label(mask2d)
    if count == 0:
        return None, None
    rows, cols = np.nonzero(labels)
    d = (rows - centre_rc[0]) ** 2 + (cols - centre_rc[1]) ** 2
    comp = labels == labels[rows[d.argmin()], cols[d.argmin()]]
    filled = ndimage.binary_fill_holes(comp)
    return filled, ("mask has holes on the measuring plane: filled" if (filled & ~comp).any() else None)


def _profile_heights(comp: np.ndarray) -> tuple[dict[str, float], float, tuple[int, int]]:
    """Heights (mm) at the anterior / middle / posterior fractions of a sagittal component
    (rows = along the spine, columns = anterior -> posterior); its depth; its column span."""
    cols = np.nonzero(comp.any(axis=0))[0]
    a0, a1 = int(cols[0]), int(cols[-1])
    heights = {}
    for name, f in _FRACTIONS.items():
        c = int(round(a0 + f * (a1 - a0)))
        extents = []
        for cc in range(max(a0, c - 1), min(a1, c + 1) + 1):  # 3 columns, about 1.5 mm
            r = np.nonzero(comp[:, cc])[0]
            if r.size:
                extents.append((r[-1] - r[0] + 1) * PLANE_STEP_MM)  # extent: holes do not shorten it
        heights[name] = float(np.mean(extents)) if extents else float("nan")
    return heights, (a1 - a0 + 1) * PLANE_STEP_MM, (a0, a1)


def _centre_rc(ranges) -> tuple[float, float]:
    (c0, _), (r0, _) = ranges
    return -r0 / PLANE_STEP_MM, -c0 / PLANE_STEP_MM


def _disc_frames(crops: "_Crops", values: list[int]) -> dict[int, Frame]:
    frames = {}
    for v in values:
        got = crops.get(v)
        if got is not None and got[0].sum() >= 10:
            pts = voxel_points(got[1], np.argwhere(got[0]))
            frames[v] = Frame.from_normal(pts.mean(axis=0), principal_normal(pts))
    return frames


class _Crops:
    """Each level's mask cut to its bounding box (+ a margin) as an image with the right
    physical origin: resampling and point lists then cost the level's size, not the volume's."""

    def __init__(self, instances: np.ndarray, reference: sitk.Image, margin: int = 3):
        self.instances, self.reference, self.margin = instances, reference, margin
        self.boxes = ndimage.find_objects(instances.astype(np.int32))

    def get(self, value: int) -> tuple[np.ndarray, sitk.Image] | None:
        if value > len(self.boxes) or self.boxes[value - 1] is None:
            return None
        box = tuple(slice(max(0, s.start - self.margin), min(n, s.stop + self.margin))
                    for s, n in zip(self.boxes[value - 1], self.instances.shape))
        mask = self.instances[box] == value
        image = sitk.GetImageFromArray(mask.astype(np.float32))
        image.SetSpacing(self.reference.GetSpacing())
        image.SetDirection(self.reference.GetDirection())
        image.SetOrigin(self.reference.TransformIndexToPhysicalPoint([int(s.start) for s in box[::-1]]))
        return mask, image


def _mean_inside(values: np.ndarray, mask: np.ndarray) -> float | None:
    core = ndimage.binary_erosion(mask)  # the rim mixes in the neighbours' signal
    core = core if core.sum() >= 4 else mask
    return float(values[core].mean()) if core.any() else None


def measure_levels(instances: np.ndarray, reference: sitk.Image, level_values: list[int],
                   image: sitk.Image | None = None, bodies_only: bool = False) -> Measured:
    """Every measurement of every level in ``level_values`` (SPIDER values of the fused
    result) on one instance labelmap on ``reference``'s geometry.

    ``bodies_only``: the vertebra masks are bodies without posterior elements (manual
    body-only references): a body's own least-spread axis gives its frame, no disc needed.
    """
    out: Measured = {}
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    disc_values = sorted(v for v in level_values if v > DISC_OFFSET)
    vertebra_values = sorted(v for v in level_values if 0 < v < DISC_OFFSET and v != CANAL_VALUE)
    crops = _Crops(instances, reference)
    frames = _disc_frames(crops, disc_values)
    canal = crops.get(CANAL_VALUE)
    canal_img = canal[1] if canal is not None else None
    float_image = sitk.Cast(image, sitk.sitkFloat32) if image is not None else None
    disc_heights: dict[int, float] = {}
    for v in disc_values:
        if v not in frames:
            for k in DISC_MEASURES:
                out[(v, k)] = Value(None, f"{level_name(v)} not found in this result")
            continue
        frame = frames[v]
        mask, mask_img = crops.get(v)
        out[(v, "disc_volume_ml")] = Value(round(float(mask.sum()) * voxel_ml, 4))
        ranges = ((-40.0, 40.0), (-20.0, 20.0))
        plane = resample_plane(mask_img, frame, ("ap", "n"), ranges) > 0.5
        comp, note = _nearest_component(plane, _centre_rc(ranges))
        if comp is None:
            for part in _FRACTIONS:
                out[(v, f"disc_height_{part}_mm")] = Value(None, "disc not on its own mid-sagittal plane")
        else:
            heights, _, _ = _profile_heights(comp)
            for part, h in heights.items():
                out[(v, f"disc_height_{part}_mm")] = Value(round(h, 3), note)
            disc_heights[v] = heights["middle"]
        # canal in the disc's axial plane, and the disc-to-CSF signal ratio
        cranges = ((-30.0, 30.0), (0.0, 70.0))
        ccomp = None
        if canal_img is not None:
            cplane = resample_plane(canal_img, frame, ("lr", "ap"), cranges) > 0.5
            labels, count = ndimage.label(cplane)
            if count:
                sizes = np.bincount(labels.ravel())[1:]
                ccomp = ndimage.binary_fill_holes(labels == 1 + int(sizes.argmax()))
        if ccomp is None:
            for k in ("canal_ap_diameter_mm", "canal_area_mm2", "disc_csf_signal_ratio"):
                out[(v, k)] = Value(None, f"no spinal canal behind {level_name(v)}")
        else:
            out[(v, "canal_area_mm2")] = Value(round(float(ccomp.sum()) * PLANE_STEP_MM ** 2, 2))
            col = int(round(np.nonzero(ccomp)[1].mean()))
            spans = [np.nonzero(ccomp[:, c])[0] for c in range(max(0, col - 2), col + 3) if c < ccomp.shape[1]]
            ap = max(((s[-1] - s[0] + 1) * PLANE_STEP_MM for s in spans if s.size), default=None)
            out[(v, "canal_ap_diameter_mm")] = Value(None if ap is None else round(float(ap), 3))
            ratio, why = None, "no image given"
            if float_image is not None and comp is not None:
                disc_signal = _mean_inside(resample_plane(float_image, frame, ("ap", "n"), ranges), comp)
                csf_signal = _mean_inside(resample_plane(float_image, frame, ("lr", "ap"), cranges), ccomp)
                if disc_signal is not None and csf_signal and csf_signal > 0:
                    ratio, why = round(disc_signal / csf_signal, 4), None
                else:
                    why = "no canal signal to compare with"
            out[(v, "disc_csf_signal_ratio")] = Value(ratio, why)

    centres = [f.centre for _, f in sorted(frames.items())]
    typical = float(np.median([np.linalg.norm(a - b) for a, b in zip(centres, centres[1:])])) \
        if len(centres) > 1 else 38.0
    bodies: dict[int, tuple[Frame, dict, float, tuple[int, int]]] = {}
    for v in vertebra_values:
        base = v - PARTIAL_OFFSET if v > PARTIAL_OFFSET else v
        got = crops.get(v)
        mask, mask_img = got if got is not None else (None, None)
        reason = None
        if v > PARTIAL_OFFSET:
            reason = f"{level_name(v)} is cut by the field of view"
        elif base == 1:
            reason = "the sacrum has no body height"
        elif mask is None:
            reason = f"{level_name(v)} not found in this result"
        above, below = frames.get(DISC_OFFSET + base), frames.get(DISC_OFFSET + base - 1)
        if reason is None and bodies_only:
            pts = voxel_points(mask_img, np.argwhere(mask))
            above = below = None
            own = Frame.from_normal(pts.mean(axis=0), principal_normal(pts))
        if reason is None and above is None and below is None and not bodies_only:
            reason = f"no disc next to {level_name(v)}: its body axis is unknown"
        if reason is not None:
            for k in BODY_MEASURES:
                out[(v, k)] = Value(None, reason)
            continue
        if bodies_only:
            frame = own
        elif above is not None and below is not None:
            frame = Frame.from_normal((above.centre + below.centre) / 2, above.centre - below.centre)
        elif above is not None:
            frame = Frame.from_normal(above.centre - above.n * typical / 2, above.n)
        else:
            frame = Frame.from_normal(below.centre + below.n * typical / 2, below.n)
        ranges = ((-45.0, 45.0), (-35.0, 35.0))
        plane = resample_plane(mask_img, frame, ("ap", "n"), ranges) > 0.5
        comp, note = _nearest_component(plane, _centre_rc(ranges))
        if comp is None:
            for k in BODY_MEASURES:
                out[(v, k)] = Value(None, "body not on the mid-sagittal plane")
            continue
        heights, depth, span = _profile_heights(comp)
        for part, h in heights.items():
            out[(v, f"body_height_{part}_mm")] = Value(round(h, 3), note)
        out[(v, "body_depth_mm")] = Value(round(depth, 3))
        wedge = heights["anterior"] / heights["posterior"] if heights["posterior"] > 0 else None
        out[(v, "body_wedge_ratio")] = Value(None if wedge is None else round(wedge, 4))
        # body volume: the vertebra in front of the body's posterior wall (+1 mm), within its height
        rel = voxel_points(mask_img, np.argwhere(mask)) - frame.centre
        ap0 = ranges[0][0] + span[0] * PLANE_STEP_MM
        ap1 = ranges[0][0] + span[1] * PLANE_STEP_MM
        half = max(heights.values()) / 2 + 2.0
        inside = ((rel @ frame.ap) <= ap1 + 1.0) & ((rel @ frame.ap) >= ap0 - 2.0) & (np.abs(rel @ frame.n) <= half)
        out[(v, "body_volume_ml")] = Value(round(float(inside.sum()) * voxel_ml, 4))
        bodies[base] = (frame, heights, depth, span)

    for v in vertebra_values:  # slip of each vertebra over the one below
        base = v - PARTIAL_OFFSET if v > PARTIAL_OFFSET else v
        if base == 1:
            continue
        disc = frames.get(DISC_OFFSET + base - 1)
        lower_values = [x for x in vertebra_values if (x - PARTIAL_OFFSET if x > PARTIAL_OFFSET else x) == base - 1]
        if disc is None or not lower_values:
            for k in SLIP_MEASURES:
                out[(v, k)] = Value(None, "no disc or no vertebra below to measure a slip against")
            continue
        walls = []
        h = disc_heights.get(DISC_OFFSET + base - 1, 8.0)
        ranges = ((-45.0, 45.0), (-30.0, 30.0))
        for value, sign in ((v, 1), (lower_values[0], -1)):
            got = crops.get(value)
            if got is None:
                walls.append(None)
                continue
            plane = resample_plane(got[1], disc, ("ap", "n"), ranges) > 0.5
            rows = np.arange(plane.shape[0]) * PLANE_STEP_MM + ranges[1][0]
            band = (sign * rows >= h / 2 + 1.0) & (sign * rows <= h / 2 + 6.0)  # next to the endplate
            cols = plane[band].any(axis=0)
            walls.append(_run_around(cols, int(-ranges[0][0] / PLANE_STEP_MM)))
        if walls[0] is None or walls[1] is None:
            for k in SLIP_MEASURES:
                out[(v, k)] = Value(None, "a body next to the disc is not on the mid-sagittal plane")
            continue
        slip = (walls[1][1] - walls[0][1]) * PLANE_STEP_MM  # > 0: the upper body sits forward
        depth = (walls[1][1] - walls[1][0] + 1) * PLANE_STEP_MM
        pct = 100.0 * slip / depth
        out[(v, "slip_mm")] = Value(round(slip, 3))
        out[(v, "slip_percent")] = Value(round(pct, 2))
        out[(v, "meyerding_grade")] = Value(float(meyerding_grade(pct)))
    return out


def meyerding_grade(percent: float) -> int:
    """Meyerding: 1 up to 25 %, 2 up to 50 %, 3 up to 75 %, 4 up to 100 %, 5 beyond; 0 under 10 %."""
    p = abs(percent)
    if p < NO_SLIP_PERCENT:
        return 0
    return min(5, 1 + int(p // 25)) if p < 100 else 5


def _run_around(cols: np.ndarray, centre: int) -> tuple[int, int] | None:
    """(first, last) column of the run of True nearest ``centre`` (the body, not the lamina)."""
    labels, count = ndimage.label(cols)
    if count == 0:
        return None
    idx = np.nonzero(labels)[0]
    k = labels[idx[np.abs(idx - centre).argmin()]]
    run = np.nonzero(labels == k)[0]
    return int(run[0]), int(run[-1])
