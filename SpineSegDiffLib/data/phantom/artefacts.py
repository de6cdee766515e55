"""Acquisition effects on a rendered volume: bias field, finite resolution with Gibbs
ringing, patient motion (ghosts along the phase-encoding direction) and Rician noise.

Arrays are (rows s, columns p, sagittal slices x); each sagittal slice is one 2-D
acquisition, so k-space effects act on axes 0 and 1.
"""

from __future__ import annotations

import numpy as np
from scipy import fft


def bias_field(s: np.ndarray, p: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field: posterior surface-coil fall-off plus low-order terms."""
    depth_mm = p.max() - p
    coil = 0.45 + 0.55 * np.exp(-depth_mm / rng.uniform(90, 220))
    sn = (s - s.mean()) / (np.ptp(s) + 1e-6)
    pn = (p - p.mean()) / (np.ptp(p) + 1e-6)
    xn = (x - x.mean()) / (np.ptp(x) + 1e-6)
    c = rng.uniform(-0.3, 0.3, 4)
    bias_sp = np.exp(c[0] * sn[:, None] + c[1] * sn[:, None] ** 2 + c[2] * sn[:, None] * pn[None, :]) \
        * coil[None, :]
    bias_x = np.exp(c[3] * xn - 0.3 * xn ** 2)
    return (bias_sp[:, :, None] * bias_x[None, None, :]).astype(np.float32)


def _k_window(n: int, keep: float, sharp: bool) -> np.ndarray:
    """1-D k-space weights (FFT order): the central ``keep`` share, sharp-edged or tapered."""
    k = np.abs(np.fft.fftfreq(n)) * 2  # 0 at the centre, 1 at Nyquist
    if sharp:  # a hard cut is what makes Gibbs ringing at sharp edges
        return (k <= keep).astype(np.float32)
    taper = np.clip((keep - k) / (0.3 * keep) + 0.5, 0, 1)  # raised-cosine edge: little ringing
    return (0.5 - 0.5 * np.cos(np.pi * taper)).astype(np.float32)


def acquire(image: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Resolution, Gibbs ringing, motion and Rician noise; returns the magnitude image and what was drawn."""
    rows, cols = image.shape[:2]
    # acquired in-plane resolution coarser than the stored pixels (zero-filled reconstruction)
    res_mm = [spacing_mm * rng.uniform(1.0, 1.9) for _ in range(2)]
    sharp = bool(rng.uniform() < 0.6)
    window = _k_window(rows, spacing_mm / res_mm[0], sharp)[:, None] \
        * _k_window(cols, spacing_mm / res_mm[1], sharp)[None, :]
    kspace = fft.fft2(image.astype(np.float32), axes=(0, 1), workers=1) * window[:, :, None]  # complex64
    drawn = {"resolution_mm": [round(r, 2) for r in res_mm], "gibbs": sharp, "motion_mm": 0.0}
    if rng.uniform() < 0.3:
        # the patient moves once during the scan: phase-encoding lines acquired after that
        # moment carry a shifted object (sequential line order), which ghosts along that axis
        axis = int(rng.integers(0, 2))
        n = image.shape[axis]
        shift_mm = rng.uniform(0.5, 3.0) * rng.choice((-1, 1))
        freq = np.fft.fftfreq(n)
        after = rng.uniform(0.2, 0.8)
        order = np.argsort(np.argsort(freq))  # acquisition order: most negative line first
        moved = order > after * n
        phase = np.where(moved, np.exp(-2j * np.pi * freq * shift_mm / spacing_mm), 1.0)
        kspace *= (phase[:, None, None] if axis == 0 else phase[None, :, None]).astype(np.complex64)
        drawn["motion_mm"] = round(float(shift_mm), 2)
    signal = fft.ifft2(kspace, axes=(0, 1), workers=1)
    # Rician noise: magnitude of the complex signal with Gaussian noise on both channels
    sigma = np.float32(rng.uniform(0.008, 0.045))
    noise = rng.standard_normal((2,) + image.shape, dtype=np.float32) * sigma
    drawn["noise_sd"] = round(float(sigma), 4)
    return np.abs(signal + noise[0] + 1j * noise[1]).astype(np.float32), drawn
