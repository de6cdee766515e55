"""Image formation: tissue classes -> MR intensities with partial volume and acquisition effects."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.data.phantom.artefacts import acquire, bias_field
from SpineSegDiffLib.data.phantom.contrast import draw_contrast
from SpineSegDiffLib.data.phantom.grid import Grid


def render(grid: Grid, sequence: str, rng: np.random.Generator, texture: np.ndarray,
           subslices: int, spacing_mm: float) -> tuple[np.ndarray, dict]:
    """One sequence of the painted grid as int16 (rows, columns, slices) and what was drawn.

    The grid holds ``subslices`` painted planes per sagittal slice: their mean is the slice's
    partial volume across its thickness.
    """
    means, amps = draw_contrast(sequence, rng)
    shape = grid.tissue.shape[:2] + (grid.tissue.shape[2] // subslices, subslices)
    mean = means[grid.tissue].reshape(shape).mean(axis=3)
    amp = amps[grid.tissue].reshape(shape).mean(axis=3)
    image = mean * (1 + amp * texture)
    x = grid.x.reshape(-1, subslices).mean(axis=1)
    image *= bias_field(grid.s, grid.p, x, rng)
    image, drawn = acquire(image, spacing_mm, rng)
    scale = rng.uniform(600, 2400)
    drawn["contrast"] = sequence
    return np.clip(image * scale, 0, 32767).astype(np.int16), drawn


def to_image(array_zyx: np.ndarray, spacing_xyz, origin_xyz) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(v) for v in spacing_xyz))
    img.SetOrigin(tuple(float(v) for v in origin_xyz))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return img
