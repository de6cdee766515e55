"""evaluation.report: the Markdown report's tables and the per-case overview's slice choice."""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.evaluation.report import _central_labelled_slice, markdown_report


def _report() -> dict:
    full = {"spinal_canal": {"dice": 0.91, "hd95_mm": 2.0, "ece": 0.02},
            "vertebrae": {"dice": 0.9, "hd95_mm": 4.0, "ece": 0.04},
            "discs": {"dice": 0.8, "hd95_mm": None, "ece": None}}
    body_only = {"vertebrae": {"recall": 0.95, "disc_space_false_positive_share": 0.15,
                               "prevertebral_false_positive_share": 0.001, "far_false_positive_share": None},
                 "discs": {"disc_space_recall": 0.83}}
    return {"model": {"id": "m", "version": "1.0"}, "settings": {"samples": 5, "steps": 10, "device": "cpu"},
            "aggregate": {"phantom": {"cases": 2, "structures": full, "uncertainty_auroc": 0.85,
                                      "most_uncertain_is_worst_rate": None},
                          "VB2": {"cases": 1, "structures": body_only, "uncertainty_auroc": None}},
            "cases": [{"case": "p1", "set": "phantom", "scores": {"structures": full}, "seconds": 12.34,
                       "png": "p1.png"},
                      {"case": "vb", "set": "VB2", "scores": {"structures": body_only}, "seconds": 3.0,
                       "png": "vb.png"}]}


def test_markdown_report_rows():
    text = markdown_report(_report())
    lines = text.splitlines()
    assert lines[0] == "# SpineSegDiff evaluation" and "Model `m` 1.0, 5 samples × 10 DDIM steps on cpu." in text
    assert "| phantom | 2 | 0.910 | 0.900 | 0.800 | 0.850 | – |" in lines
    # body-only: recall and disc spaces named, an unscored canal shown as a dash
    assert "| VB2 | 1 | – | 0.950 (recall) | 0.830 (disc spaces) | – | – |" in lines
    assert "| VB2 | 0.150 | 0.001 | – |" in lines  # the over-segmentation table
    assert "| p1 | phantom | 0.910 | 0.900 | 0.800 | 3.000 | 0.030 | 12.3 | ![](p1.png) |" in lines
    assert "| vb | VB2 | n/a | 0.950 (recall) | 0.830 (disc spaces) | – | – | 3.0 | ![](vb.png) |" in lines
    assert text.endswith("\n")


def test_no_body_only_table_without_body_only_sets():
    report = _report()
    del report["aggregate"]["VB2"]
    assert "body-only labels rule them out" not in markdown_report(report)


def test_overview_slice_prefers_labelled_central_slices():
    assert _central_labelled_slice(None, 9) == 4
    labels = np.zeros((9, 4, 4), np.uint8)
    assert _central_labelled_slice(labels, 9) == 4
    labels[1] = 1  # a fully labelled edge slice ...
    labels[5, :3] = 2  # ... against a nearly full central one
    assert _central_labelled_slice(labels, 9) == 5
    labels[5] = 0
    assert _central_labelled_slice(labels, 9) == 1
