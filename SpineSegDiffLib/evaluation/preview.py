"""PNG previews: sagittal slices side by side with label and uncertainty overlays.

PIL only (no matplotlib), so previews work in Slicer's Python and on headless servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES

LABEL_ALPHA = 0.4
TITLE_HEIGHT = 16
GAP = 4


@dataclass
class PreviewPanel:
    """One 2D panel: rows are drawn top to bottom, columns left to right.

    ``labels`` holds semantic values (1 canal, 2 vertebrae, 3 discs); ``heat`` is a
    float map in 0..1 (uncertainty), drawn transparent where low. ``spacing`` is the
    (row, column) pixel size in mm, so the panel keeps its physical aspect ratio.
    """
    image: np.ndarray
    title: str = ""
    labels: np.ndarray | None = None
    heat: np.ndarray | None = None
    spacing: tuple[float, float] = (1.0, 1.0)


def mid_sagittal(array_zyx: np.ndarray, axis: int = 2) -> np.ndarray:
    """The middle slice of ``array_zyx`` along ``axis`` (2 = left-right in (z, y, x))."""
    array_zyx = np.asarray(array_zyx)
    return np.take(array_zyx, array_zyx.shape[axis] // 2, axis=axis)


def _grey(image: np.ndarray) -> np.ndarray:
    """Percentile window to 0..1 so one bright voxel does not darken the panel."""
    image = np.asarray(image, np.float32)
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    return np.clip((np.nan_to_num(image) - lo) / max(hi - lo, 1e-6), 0, 1)


def _heat_rgb(heat: np.ndarray) -> np.ndarray:
    """Red -> yellow; stops before white so the most uncertain voxels stay vivid on grey."""
    return np.stack([np.clip(0.5 + heat, 0, 1), np.clip(2 * heat - 0.8, 0, 1),
                     np.zeros_like(heat)], axis=-1)


def _render_panel(panel: PreviewPanel, height: int) -> Image.Image:
    image = np.asarray(panel.image)
    if image.ndim != 2 or min(image.shape) < 2:
        raise InputError(f"preview panel '{panel.title}': expected a 2D image, got shape "
                         f"{image.shape}; pass one slice")
    rows, cols = image.shape
    width = max(1, int(round(height * cols * panel.spacing[1] / (rows * panel.spacing[0]))))
    size = (width, height)
    grey = np.asarray(Image.fromarray((_grey(image) * 255).astype(np.uint8)).resize(size, Image.BILINEAR),
                      np.float32) / 255
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if panel.heat is not None:
        heat = np.asarray(Image.fromarray(np.clip(np.nan_to_num(panel.heat), 0, 1).astype(np.float32))
                          .resize(size, Image.BILINEAR))
        alpha = (np.clip((heat - 0.1) / 0.4, 0, 1) * 0.75)[:, :, None]
        rgb = rgb * (1 - alpha) + _heat_rgb(heat) * alpha
    if panel.labels is not None:
        if np.asarray(panel.labels).shape != image.shape:
            raise InputError(f"preview panel '{panel.title}': labels {np.shape(panel.labels)} do not "
                             f"match the image {image.shape}")
        labels = np.asarray(Image.fromarray(np.asarray(panel.labels).astype(np.uint8))
                            .resize(size, Image.NEAREST))
        for structure in STRUCTURES:
            inside = labels == structure.value
            if not inside.any():
                continue
            colour = np.array(structure.color, np.float32)
            rgb[inside] = rgb[inside] * (1 - LABEL_ALPHA) + colour * LABEL_ALPHA
            outline = inside & ~ndimage.binary_erosion(inside)
            rgb[outline] = colour
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def save_preview(path: str | os.PathLike, panels: Sequence[PreviewPanel], height: int = 384) -> None:
    """Write ``panels`` side by side, each ``height`` pixels tall with its title above."""
    if not panels:
        raise InputError(f"{path}: nothing to preview; give at least one panel")
    images = [_render_panel(panel, height) for panel in panels]
    total = sum(im.width for im in images) + GAP * (len(images) - 1)
    canvas = Image.new("RGB", (total, height + TITLE_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = 0
    for panel, im in zip(panels, images):
        canvas.paste(im, (x, TITLE_HEIGHT))
        draw.text((x + 3, 2), panel.title, fill=(255, 255, 255), font=font)
        x += im.width + GAP
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
