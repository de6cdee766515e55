"""Scores of a segmentation against a reference, and of its uncertainty.

Dice and HD95 come from MONAI's metrics. Partial labels are respected: a structure
the reference does not annotate is not scored, and vertebral-body-only references
(the VB sets of the real-MRI folder) are scored as *recall* — the fraction of
labelled body voxels the predicted vertebrae cover — because the prediction also
(rightly) covers posterior elements that those masks leave out.

Uncertainty quality: AUROC of voxel uncertainty against voxel error (does the map
point at the mistakes?), expected calibration error of the fused probabilities, and
whether the structure ranked most uncertain is the one with the worst Dice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES

# beyond this distance from a labelled vertebral body no part of a vertebra can lie
# (pedicles, laminae and spinous processes included); shared with the training loss
BODY_ONLY_FAR_MM = 70.0
_VERTEBRA = BY_KEY["vertebrae"].value
_DISC_INDEX = STRUCTURES.index(BY_KEY["discs"])


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))) else round(float(v), 5)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = pred.sum() + ref.sum()
    return float(2.0 * np.logical_and(pred, ref).sum() / denom) if denom else math.nan


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI)."""
    if not pred.any() or not ref.any():
        return math.nan
    import warnings

    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.uint8))
    r = torch.from_numpy(ref[None, None].astype(np.uint8))
    with warnings.catch_warnings():  # MONAI warns about its own internal argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                           spacing=list(spacing_zyx))
    return float(value.reshape(-1)[0])


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` ranking `positives` first (MONAI)."""
    if positives.all() or not positives.any():
        return math.nan
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.from_numpy(scores.astype(np.float32).ravel()),
                                 torch.from_numpy(positives.astype(np.float32).ravel())))


def expected_calibration_error(prob: np.ndarray, ref: np.ndarray, bins: int = 15) -> float:
    """ECE of binary probabilities against the reference (MONAI, equal-width bins)."""
    if prob.size == 0:
        return math.nan
    from monai.metrics import CalibrationErrorMetric

    metric = CalibrationErrorMetric(num_bins=bins, include_background=True)
    p = torch.from_numpy(prob.astype(np.float32).ravel()[None, None])
    r = torch.from_numpy(ref.astype(np.float32).ravel()[None, None])
    return float(metric(p, r).reshape(-1)[0])


def score_result(result, reference: np.ndarray, annotated: np.ndarray, body_only: bool) -> dict:
    """All scores of a ``segment_image`` result against a labelmap on the input grid."""
    import SimpleITK as sitk

    probs = np.stack([sitk.GetArrayFromImage(p) for p in result.probabilities])
    unc = np.stack([sitk.GetArrayFromImage(u) for u in result.structure_uncertainty])
    regions = body_only_regions(result.grid, reference) if body_only else None
    spacing_zyx = tuple(result.labelmap.GetSpacing()[::-1])
    return score_case(result.masks, probs, unc, reference, annotated, body_only, spacing_zyx,
                      result.summary, regions, result.labelmap.GetDirection())


def body_only_grid_regions(grid, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelled bodies of a body-only reference (labelmap on the input grid) and the
    regions ``body_only_regions`` maps back (disc spaces, prevertebral region, beyond the
    posterior elements), all bool (n_slices, size, size) on the model grid.

    Found slice by slice on the model grid, where rows and columns have a known
    anatomical direction whatever the input's orientation (see ``body_only``).
    """
    from SpineSegDiffLib.data.body_only import beyond_posterior_elements, volume_regions

    col_mm, row_mm, slice_mm = grid.grid_image.GetSpacing()  # grid axes: x cols, y rows, z slices
    on_grid = grid.labels_to_grid(grid.input_image((reference == _VERTEBRA).astype(np.uint8))) > 0
    gaps, front = volume_regions(on_grid, (row_mm, col_mm))
    beyond = beyond_posterior_elements(on_grid, (slice_mm, row_mm, col_mm))
    return on_grid, gaps, front, beyond


def body_only_regions(grid, reference: np.ndarray, on_grid: tuple | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disc spaces, prevertebral region and the region beyond the posterior elements /
    beside the bodies (``body_only.beyond_posterior_elements``) of a body-only reference,
    on the input grid. ``on_grid``: this reference's ``body_only_grid_regions``, when the
    caller has them already.
    """
    import SimpleITK as sitk

    _, gaps, front, beyond = on_grid if on_grid is not None else body_only_grid_regions(grid, reference)
    back = [sitk.GetArrayFromImage(grid.to_input_geometry(r.astype(np.uint8), "nearest")) > 0
            for r in (gaps, front, beyond)]
    return tuple(b & (reference == 0) for b in back)


def score_case(masks: np.ndarray, probabilities: np.ndarray, uncertainty: np.ndarray,
               reference: np.ndarray, annotated: np.ndarray, body_only: bool,
               spacing_zyx: tuple[float, float, float], summary: dict | None = None,
               regions: tuple[np.ndarray, ...] | None = None,
               direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> dict:
    """All scores of one case on the input grid.

    masks, probabilities, uncertainty: (C, z, y, x); reference: labelmap (z, y, x);
    annotated: (C,) bool of structures the reference labels; regions: the disc spaces,
    prevertebral region and beyond-the-posterior-elements region of a body-only
    reference (``body_only_regions``), scored as the share of each that the prediction
    wrongly calls vertebra; direction: the image's, to find superior-inferior.
    """
    from SpineSegDiffLib.evaluation import partial_label_scores as pls

    si_axis = pls.superior_axis(direction)
    out: dict = {"structures": {}}
    region_all = np.zeros(reference.shape, dtype=bool)
    errors_all = np.zeros(reference.shape, dtype=bool)
    unc_all = np.zeros(reference.shape, dtype=np.float32)
    for i, s in enumerate(STRUCTURES):
        if not annotated[i]:
            continue
        pred, ref = masks[i], reference == s.value
        entry: dict = {}
        if body_only and s.key == "vertebrae":
            entry["recall"] = _nan_to_none(float(np.logical_and(pred, ref).sum() / ref.sum()) if ref.any() else math.nan)
            entry["scored_as"] = "recall of labelled vertebral bodies"
            # recall alone rewards predicting bone everywhere: also report the share of
            # predicted vertebra voxels too far from any labelled body to be vertebra
            if pred.any() and ref.any():
                far = ndimage.distance_transform_edt(~ref, sampling=spacing_zyx) > BODY_ONLY_FAR_MM
                entry["far_false_positive_share"] = _nan_to_none(float((pred & far).sum() / pred.sum()))
            entry["body_box_dice"] = _nan_to_none(pls.body_box_dice(pred, ref))
            entry["span_volume_ratio"] = _nan_to_none(pls.span_volume_ratio(pred, ref, si_axis))
            out["structures"][s.key] = entry
            if regions is not None:
                for name, region in zip(("disc_space_false_positive_share", "prevertebral_false_positive_share",
                                         "beyond_false_positive_share"), regions):
                    if region.any():
                        entry[name] = _nan_to_none(float((pred & region).sum() / region.sum()))
                decided = ref | np.logical_or.reduce(regions)
                entry["decided_uncertainty_auroc"] = _nan_to_none(auroc(uncertainty[i][decided],
                                                                        (pred != ref)[decided]))
                gaps = regions[0]
                if gaps.any() and not annotated[_DISC_INDEX]:
                    out["structures"]["discs"] = {
                        "disc_space_recall": _nan_to_none(float((masks[_DISC_INDEX] & gaps).sum() / gaps.sum())),
                        "scored_as": "share of the gaps between labelled vertebral bodies predicted as disc"}
            continue
        entry["dice"] = _nan_to_none(dice(pred, ref))
        entry["hd95_mm"] = _nan_to_none(hd95(pred, ref, spacing_zyx))
        if s.key == "discs" and not annotated[STRUCTURES.index(BY_KEY["vertebrae"])]:
            # disc-only reference (the IVD set): what it decides around the discs
            band = pls.reference_band(ref, si_axis, spacing_zyx)
            entry["band_dice"] = _nan_to_none(dice(pred & band, ref & band))
            entry["between_discs_vertebra_share"] = _nan_to_none(pls.share(
                masks[STRUCTURES.index(BY_KEY["vertebrae"])], pls.between_discs(ref, si_axis, spacing_zyx)))
            entry["decided_uncertainty_auroc"] = _nan_to_none(auroc(uncertainty[i][band], (pred != ref)[band]))
        # evaluate uncertainty where the question is open: on and around either mask
        region = ndimage.binary_dilation(pred | ref, iterations=2)
        err = (pred != ref) & region
        entry["uncertainty_auroc"] = _nan_to_none(auroc(uncertainty[i][region], err[region]))
        entry["ece"] = _nan_to_none(expected_calibration_error(probabilities[i][region], ref[region]))
        region_all |= region
        errors_all |= err
        unc_all = np.maximum(unc_all, np.where(region, uncertainty[i], 0))
        out["structures"][s.key] = entry
    out["uncertainty_auroc"] = _nan_to_none(auroc(unc_all[region_all], errors_all[region_all])) if region_all.any() else None
    if summary is not None:
        scored = {k: v["dice"] for k, v in out["structures"].items() if v.get("dice") is not None}
        if len(scored) >= 2:
            most_uncertain = max(scored, key=lambda k: summary["structures"][k]["mean_uncertainty"])
            worst = min(scored, key=scored.get)
            out["most_uncertain_structure"] = most_uncertain
            out["worst_structure"] = worst
            out["most_uncertain_is_worst"] = most_uncertain == worst
    return out


def headline_score(entry: dict) -> tuple[str, float] | None:
    """The score to show first for one structure: Dice, else body recall, else the
    disc-space share of a body-only case; None when the structure was not scored."""
    for key, name in (("dice", "Dice"), ("recall", "recall"), ("disc_space_recall", "disc spaces")):
        if entry.get(key) is not None:
            return name, entry[key]
    return None


AGGREGATED_METRICS = ("dice", "recall", "body_box_dice", "span_volume_ratio", "far_false_positive_share",
                      "disc_space_false_positive_share", "prevertebral_false_positive_share",
                      "beyond_false_positive_share", "disc_space_recall", "band_dice",
                      "between_discs_vertebra_share", "hd95_mm", "uncertainty_auroc",
                      "decided_uncertainty_auroc", "ece")
# shown as [min, max] over cases too: their targets hold on every case
RANGE_METRICS = ("span_volume_ratio",)


def aggregate(cases: list[dict]) -> dict:
    """Mean of every per-structure score over cases, grouped by data set."""
    groups: dict[str, list[dict]] = {}
    for c in cases:
        groups.setdefault(c.get("set", "all"), []).append(c)
    out = {}
    for name, items in groups.items():
        g: dict = {"cases": len(items), "structures": {}}
        for s in STRUCTURES:
            for metric in AGGREGATED_METRICS:
                vals = [c["scores"]["structures"].get(s.key, {}).get(metric) for c in items]
                vals = [v for v in vals if v is not None]
                if vals:
                    g["structures"].setdefault(s.key, {})[metric] = round(float(np.mean(vals)), 4)
                    if metric in RANGE_METRICS:
                        g["structures"][s.key][metric + "_range"] = [round(float(min(vals)), 3),
                                                                      round(float(max(vals)), 3)]
        flags = [c["scores"].get("most_uncertain_is_worst") for c in items]
        flags = [f for f in flags if f is not None]
        if flags:
            g["most_uncertain_is_worst_rate"] = round(float(np.mean(flags)), 3)
        aurocs = [c["scores"].get("uncertainty_auroc") for c in items if c["scores"].get("uncertainty_auroc") is not None]
        if aurocs:
            g["uncertainty_auroc"] = round(float(np.mean(aurocs)), 4)
        out[name] = g
    return out
