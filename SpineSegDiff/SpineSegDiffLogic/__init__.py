"""Slicer-facing logic of SpineSegDiff: MRML nodes in and out, no Qt, no application.

Every function takes the scene (and the segmentations logic) as arguments, so the
same code runs inside Slicer and under pytest with the slicer-core wheel.
"""

from .export import export_for_training
from .results import ImportedResults, import_results
from .review import ReviewRow, jump_to, review_rows
from .uncertainty_display import choose_color_node_id, show_overlay
from .volumes import load_volume, sitk_from_node, set_node_from_sitk

__all__ = ["ImportedResults", "ReviewRow", "choose_color_node_id", "export_for_training",
           "import_results", "jump_to", "load_volume", "review_rows", "set_node_from_sitk",
           "show_overlay", "sitk_from_node"]
