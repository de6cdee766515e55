"""Per-slice network inputs built from model-grid volumes."""

from __future__ import annotations

import numpy as np


def context_stack(slices: np.ndarray, channels: int) -> np.ndarray:
    """(n, H, W) -> (n, channels, H, W): each slice with its neighbours (2.5D).

    `channels` is odd; slice i gets slices i-k..i+k, repeating the edge slices so the
    first and last slices keep the same channel layout as the others.
    """
    if channels == 1:
        return slices[:, None]
    if channels % 2 == 0:
        raise ValueError(f"context channels must be odd, got {channels}")
    k = channels // 2
    n = slices.shape[0]
    idx = np.clip(np.arange(n)[:, None] + np.arange(-k, k + 1)[None, :], 0, n - 1)
    return slices[idx]
