"""Image formation: tissue classes -> MR intensities with partial volume, bias field and noise."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SpineSegDiffLib.data.phantom.grid import Grid
from SpineSegDiffLib.data.phantom.tissues import N_TISSUES, PROTOTYPE_CONTRAST


def render(tissue: np.ndarray, sequence: str, grid: Grid, rng: np.random.Generator,
            texture: np.ndarray, spacing) -> np.ndarray:
    table = PROTOTYPE_CONTRAST[sequence]
    means = np.array([table[t][0] for t in range(N_TISSUES)], np.float32)
    amps = np.array([table[t][1] for t in range(N_TISSUES)], np.float32)
    means *= rng.uniform(0.9, 1.1, N_TISSUES).astype(np.float32)  # scanner/patient variation
    image = means[tissue] * (1 + amps[tissue] * texture)
    # partial volume: thick slices and finite in-plane resolution
    sigma = (0.5, 0.5, 0.35)
    image = ndimage.gaussian_filter(image, sigma=sigma, truncate=2.5)
    # smooth multiplicative bias: posterior surface coil fall-off plus low-order terms
    depth_mm = grid.p.max() - grid.p
    coil = 0.45 + 0.55 * np.exp(-depth_mm / rng.uniform(90, 220))
    sn = (grid.s - grid.s.mean()) / (np.ptp(grid.s) + 1e-6)
    pn = (grid.p - grid.p.mean()) / (np.ptp(grid.p) + 1e-6)
    xn = (grid.x - grid.x.mean()) / (np.ptp(grid.x) + 1e-6)
    c = rng.uniform(-0.3, 0.3, 4)
    bias_sp = np.exp(c[0] * sn[:, None] + c[1] * sn[:, None] ** 2 + c[2] * sn[:, None] * pn[None, :]) \
        * coil[None, :]
    bias_x = np.exp(c[3] * xn - 0.3 * xn ** 2)
    image *= (bias_sp[:, :, None] * bias_x[None, None, :]).astype(np.float32)
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels
    sigma_n = np.float32(rng.uniform(0.012, 0.04))
    real = image + sigma_n * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma_n * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag)
    scale = rng.uniform(600, 2400)
    return np.clip(image * scale, 0, 32767).astype(np.int16)


def to_image(array_zyx: np.ndarray, spacing_xyz, origin_xyz) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(v) for v in spacing_xyz))
    img.SetOrigin(tuple(float(v) for v in origin_xyz))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return img
