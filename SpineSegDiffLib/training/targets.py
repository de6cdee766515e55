"""Training slices and their partial-label targets and loss weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES
from SpineSegDiffLib.evaluation.metrics import BODY_ONLY_FAR_MM
from SpineSegDiffLib.grid.slices import context_stack
from SpineSegDiffLib.training.data import GridCase


@dataclass
class SliceSet:
    """All training slices of some cases, stacked for fast batch gathering."""

    inputs: np.ndarray  # (N, channels, H, W) float32
    labels: np.ndarray  # (N, H, W) uint8
    annotated: np.ndarray  # (N, C) bool
    body_only: np.ndarray  # (N,) bool
    has_label: np.ndarray  # (N,) bool
    weights: np.ndarray  # (N, C, H, W) uint8 loss weights, computed once (see partial_label_targets)
    # the vertebra size prior (training/size_prior.py): budget in pixels (0 = none), span rows
    prior_budget: np.ndarray | None = None  # (N,) float32
    prior_band: np.ndarray | None = None  # (N, 2) int32

    @classmethod
    def from_cases(cls, cases: list[GridCase], channels: int, spacing_mm: float,
                   size_prior_ratio: float = 0.0, boundary_weight: int = 1) -> "SliceSet":
        if not cases:
            raise InputError("no training cases: check the data folders")
        inputs = np.concatenate([context_stack(c.slices, channels) for c in cases])
        labels = np.concatenate([c.labels for c in cases])
        annotated = np.concatenate([np.repeat(c.annotated[None], len(c.slices), 0) for c in cases])
        body_only = np.concatenate([np.full(len(c.slices), c.body_only) for c in cases])
        beyond = np.concatenate([_beyond_posterior_elements(c, spacing_mm) for c in cases])
        labels, weights = partial_label_targets(labels, annotated, body_only, spacing_mm, beyond)
        weights = weights.astype(np.uint8)
        if boundary_weight > 1:
            from SpineSegDiffLib.training.boundary import emphasise_borders

            weights = emphasise_borders(labels, weights, boundary_weight)
        budget = band = None
        if size_prior_ratio > 0:
            from SpineSegDiffLib.training.size_prior import slice_budgets

            parts = [slice_budgets(c.labels, c.body_only, size_prior_ratio) for c in cases]
            budget = np.concatenate([b for b, _ in parts])
            band = np.concatenate([r for _, r in parts])
        return cls(inputs, labels, annotated, body_only, labels.reshape(len(labels), -1).any(1), weights,
                   budget, band)


def _beyond_posterior_elements(case: GridCase, spacing_mm: float) -> np.ndarray:
    """(n, H, W) bool: where a body-only case's bodies say no spine can be (3-D rule)."""
    from SpineSegDiffLib.data.body_only import beyond_posterior_elements

    if not case.body_only:
        return np.zeros(case.labels.shape, dtype=bool)
    spacing = case.spacing_mm or (spacing_mm, spacing_mm, spacing_mm)
    return beyond_posterior_elements(case.labels == BY_KEY["vertebrae"].value, spacing)


def partial_label_targets(labels: np.ndarray, annotated: np.ndarray, body_only: np.ndarray,
                          spacing_mm: float, beyond: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets and (B, C, H, W) loss weights for partially labelled slices.

    A structure a case does not annotate gets weight 0, except where the labels
    still decide it. On vertebral-body-only slices (see ``body_only``) the vertebra
    channel counts the labelled bodies, the disc spaces between them and the
    prevertebral region (both not bone), and voxels far (> 70 mm) from any body,
    beyond the reach of pedicles, laminae and spinous processes; the disc channel
    counts the disc spaces as discs and the bodies, the prevertebral region and the
    far voxels as no disc; the canal channel counts all of those as no canal.
    ``beyond`` (N, H, W), from ``body_only.beyond_posterior_elements``, adds the voxels
    behind the reach of the posterior elements and beside the bodies as known "none of
    the three", also on slices that hold no body.
    Returns (labels with the disc spaces set to discs, weights).
    """
    from scipy import ndimage

    from SpineSegDiffLib.data.body_only import slice_regions

    labels = labels.copy()
    b, h, w = labels.shape
    weights = np.repeat(annotated[:, :, None, None].astype(np.float32), h, 2).repeat(w, 3)
    channel = {s.key: i for i, s in enumerate(STRUCTURES)}
    for i in np.nonzero(body_only)[0]:
        body = labels[i] == BY_KEY["vertebrae"].value
        outside = beyond[i] if beyond is not None else np.zeros_like(body)
        if not body.any():
            known = outside
        else:
            far = ndimage.distance_transform_edt(~body) * spacing_mm > BODY_ONLY_FAR_MM
            gaps, front = slice_regions(body, (spacing_mm, spacing_mm))
            labels[i][gaps] = BY_KEY["discs"].value
            known = body | gaps | front | far | outside
        for key in ("spinal_canal", "vertebrae", "discs"):
            if key == "vertebrae" or not annotated[i, channel[key]]:
                weights[i, channel[key]] = known
    return labels, weights
