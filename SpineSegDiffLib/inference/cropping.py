"""Whether a run crops, and to which box: the setting, the model's presegmenter, its mask.

The presegmentation (one encoder + head pass per slice) says where the spine is:
``--crop slices`` samples only the sagittal slices holding it (plus a margin), whole, so
those slices come out exactly as uncropped; ``--crop auto`` also crops each slice to the
spine's box (``grid/crop.py``), which changes the network's context (benchmarks/README.md,
"Crop ablation"); ``off``, or a model without a presegmenter, samples the whole field of
view. Outside what is sampled the result is background with uncertainty 0. What was done
goes into the summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from SpineSegDiffLib.core.log import logger
from SpineSegDiffLib.grid.crop import CropBox, spine_box
from SpineSegDiffLib.grid.geometry import ModelGrid
from SpineSegDiffLib.inference.presegmentation import model_presegmentation
from SpineSegDiffLib.inference.settings import SegmentSettings

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.loading import LoadedModel

CROP_CHOICES = ("auto", "slices", "off")
# Lateral margin: slices beyond the last one the presegmentation marks (transverse processes).
CROP_SLICE_MARGIN_MM = 10.0
# The U-Net halves the image four times (model/network.py SIZE_MULTIPLE; kept torch-free here).
CROP_MULTIPLE = 16


def wants_crop(model: LoadedModel, settings: SegmentSettings) -> bool:
    """True when the run crops (``--crop auto`` or ``slices``) and the model has a presegmenter."""
    return settings.crop != "off" and model_presegmentation(model) is not None


def crop_box(presegmentation: np.ndarray, grid: ModelGrid, in_plane: bool = True,
             margin_mm: float = 20.0) -> CropBox | None:
    """The box around the presegmentation (n, C, H, W probabilities) on ``grid``; None if it is empty.
    ``in_plane=False``: whole slices, only the lateral ones without spine left out. The in-plane
    ``margin_mm`` (``SegmentSettings.crop_margin_mm``) covers what the ensemble finds beyond the
    presegmenter (posterior elements, a disc's edge) and some of the network's context."""
    col_mm, _, slice_mm = grid.grid_image.GetSpacing()
    return spine_box(presegmentation.max(axis=1) > 0.5, pixel_mm=col_mm, slice_mm=slice_mm,
                     margin_mm=margin_mm, slice_margin_mm=CROP_SLICE_MARGIN_MM, multiple=CROP_MULTIPLE,
                     in_plane=in_plane)


def choose_crop(model: LoadedModel, settings: SegmentSettings, grid: ModelGrid,
                presegmentation: np.ndarray | None) -> tuple[CropBox | None, dict, list[str]]:
    """(box or None for the whole grid, the summary's ``crop`` record, notes for the user)."""
    record: dict = {"setting": settings.crop, "applied": False}
    if settings.crop == "off":
        return None, record, []
    if model_presegmentation(model) is None:
        note = (f"--crop {settings.crop}: the model {model.identity.get('id')} has no presegmenter, so the whole "
                "field of view is sampled (no crop)")
        logger.info(note)
        return None, record | {"reason": "no presegmenter"}, [note]
    in_plane = settings.crop == "auto"
    box = crop_box(presegmentation, grid, in_plane=in_plane, margin_mm=settings.crop_margin_mm)
    if box is None:
        note = f"--crop {settings.crop}: the presegmentation found no spine, so the whole field of view is sampled"
        logger.info(note)
        return None, record | {"reason": "empty presegmentation"}, [note]
    record |= {"applied": not box.is_whole, "margin_mm": settings.crop_margin_mm if in_plane else None,
               "slice_margin_mm": CROP_SLICE_MARGIN_MM, **box.to_dict()}
    return (None if box.is_whole else box), record, []
