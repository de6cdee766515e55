"""Whether a run crops, and to which box: the setting, the model's presegmenter, its mask.

``--crop auto`` samples only the spine's box (``grid/crop.py``) found by the presegmentation
(one encoder + head pass per slice), with the margins below; ``off``, or a model without a
presegmenter, samples the whole field of view as before. What was done goes into the summary.
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

CROP_CHOICES = ("auto", "off")
# In-plane margin around the presegmented spine: the ensemble may reach further than the
# presegmenter (posterior elements, a disc's edge), and the crop's border changes the
# network's context (benchmarks/README.md, "Crop ablation").
CROP_MARGIN_MM = 20.0
# Lateral margin: slices beyond the last one the presegmentation marks (transverse processes).
CROP_SLICE_MARGIN_MM = 10.0
# The U-Net halves the image four times (model/network.py SIZE_MULTIPLE; kept torch-free here).
CROP_MULTIPLE = 16


def wants_crop(model: "LoadedModel", settings: SegmentSettings) -> bool:
    """True when the run crops: ``--crop auto`` and a model with a presegmenter."""
    return settings.crop == "auto" and model_presegmentation(model) is not None


def crop_box(presegmentation: np.ndarray, grid: ModelGrid) -> CropBox | None:
    """The box around the presegmentation (n, C, H, W probabilities) on ``grid``; None if it is empty."""
    col_mm, _, slice_mm = grid.grid_image.GetSpacing()
    return spine_box(presegmentation.max(axis=1) > 0.5, pixel_mm=col_mm, slice_mm=slice_mm,
                     margin_mm=CROP_MARGIN_MM, slice_margin_mm=CROP_SLICE_MARGIN_MM, multiple=CROP_MULTIPLE)


def choose_crop(model: "LoadedModel", settings: SegmentSettings, grid: ModelGrid,
                presegmentation: np.ndarray | None) -> tuple[CropBox | None, dict, list[str]]:
    """(box or None for the whole grid, the summary's ``crop`` record, notes for the user)."""
    record: dict = {"setting": settings.crop, "applied": False}
    if settings.crop == "off":
        return None, record, []
    if model_presegmentation(model) is None:
        note = (f"--crop auto: the model {model.identity.get('id')} has no presegmenter, so the whole "
                "field of view is sampled (no crop)")
        logger.info(note)
        return None, record | {"reason": "no presegmenter"}, [note]
    box = crop_box(presegmentation, grid)
    if box is None:
        note = "--crop auto: the presegmentation found no spine, so the whole field of view is sampled"
        logger.info(note)
        return None, record | {"reason": "empty presegmentation"}, [note]
    record |= {"applied": not box.is_whole, "margin_mm": CROP_MARGIN_MM,
               "slice_margin_mm": CROP_SLICE_MARGIN_MM, **box.to_dict()}
    return (None if box.is_whole else box), record, []
