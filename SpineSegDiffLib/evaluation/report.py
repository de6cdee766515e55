"""Human-readable results: an overview PNG per case and a Markdown report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.evaluation.metrics import headline_score
from SpineSegDiffLib.evaluation.preview import PreviewPanel, save_preview


def _central_labelled_slice(labels: np.ndarray | None, n: int) -> int:
    """The slice with the most labelled voxels near the middle, else the middle one."""
    if labels is None or not labels.any():
        return n // 2
    counts = labels.reshape(n, -1).astype(bool).sum(1).astype(float)
    counts *= 1.0 - 0.5 * np.abs(np.arange(n) - n / 2) / max(n / 2, 1)  # prefer central slices
    return int(np.argmax(counts))


def case_overview_png(path: str | Path, image: sitk.Image, reference: sitk.Image | None, result,
                      title: str = "") -> None:
    """Image | reference | prediction | uncertainty on one sagittal slice of the model grid."""
    grid = result.grid
    ref = grid.labels_to_grid(reference) if reference is not None else None
    pred = grid.labels_to_grid(result.labelmap)
    unc = grid.image_to_grid(result.uncertainty)
    i = _central_labelled_slice(ref if ref is not None else pred, grid.slices.shape[0])
    spacing = tuple(grid.grid_image.GetSpacing()[1::-1])  # (row, column) spacing
    panels = [PreviewPanel(grid.slices[i], f"{title} slice {i + 1}", spacing=spacing)]
    if ref is not None:
        panels.append(PreviewPanel(grid.slices[i], "reference", labels=ref[i], spacing=spacing))
    panels.append(PreviewPanel(grid.slices[i], "SpineSegDiff", labels=pred[i], spacing=spacing))
    panels.append(PreviewPanel(grid.slices[i], "uncertainty", heat=np.clip(unc[i], 0, 1), spacing=spacing))
    save_preview(path, panels)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _cell(e: dict) -> str:
    headline = headline_score(e)
    if headline is None:
        return "–"
    name, value = headline
    return _fmt(value) + ("" if name == "Dice" else f" ({name})")


def _body_only_table(aggregate: dict) -> list[str]:
    """Over-segmentation on body-only sets, which recall alone would hide."""
    rows = []
    for name, g in aggregate.items():
        v = g["structures"].get("vertebrae", {})
        if "disc_space_false_positive_share" in v or "prevertebral_false_positive_share" in v:
            rows.append(f"| {name} | {_fmt(v.get('disc_space_false_positive_share'))} | "
                        f"{_fmt(v.get('prevertebral_false_positive_share'))} | "
                        f"{_fmt(v.get('far_false_positive_share'))} |")
    if not rows:
        return []
    return ["", "## Vertebrae where the body-only labels rule them out", "",
            "Share of each region predicted as vertebra (lower is better): the disc spaces between "
            "labelled bodies, the prevertebral region (> 5 mm in front of the bodies), and the predicted "
            "vertebra voxels > 70 mm from any body (share of the prediction).", "",
            "| set | disc spaces | prevertebral | far from bodies |", "|---|---|---|---|"] + rows


def markdown_report(report: dict) -> str:
    lines = ["# SpineSegDiff evaluation", "",
             f"Model `{report['model'].get('id')}` {report['model'].get('version')}, "
             f"{report['settings']['samples']} samples × {report['settings']['steps']} DDIM steps "
             f"on {report['settings']['device']}.", "",
             "Vertebral-body-only references are scored as recall (fraction of labelled body "
             "voxels covered); the gaps between two labelled bodies are disc spaces, scored as the "
             "share predicted as disc (disc spaces) — other structures by Dice. Unlabelled "
             "structures are not scored.", "",
             "## Per data set", "",
             "| set | cases | " + " | ".join(f"{s.key} Dice/recall" for s in STRUCTURES)
             + " | uncertainty AUROC | most uncertain = worst |",
             "|---|---|" + "---|" * len(STRUCTURES) + "---|---|"]
    for name, g in report["aggregate"].items():
        cells = []
        for s in STRUCTURES:
            e = g["structures"].get(s.key, {})
            cells.append(_cell(e))
        lines.append(f"| {name} | {g['cases']} | " + " | ".join(cells)
                     + f" | {_fmt(g.get('uncertainty_auroc'))} | {_fmt(g.get('most_uncertain_is_worst_rate'))} |")
    lines += _body_only_table(report["aggregate"])
    lines += ["", "## Per case", "",
              "| case | set | " + " | ".join(s.key for s in STRUCTURES) + " | HD95 mm (mean) | ECE (mean) | s | overview |",
              "|---|---|" + "---|" * len(STRUCTURES) + "---|---|---|---|"]
    for c in report["cases"]:
        st = c["scores"]["structures"]
        cells = []
        hds, eces = [], []
        for s in STRUCTURES:
            e = st.get(s.key)
            if e is None:
                cells.append("n/a")
                continue
            cells.append(_cell(e))
            if e.get("hd95_mm") is not None:
                hds.append(e["hd95_mm"])
            if e.get("ece") is not None:
                eces.append(e["ece"])
        lines.append(f"| {c['case']} | {c['set']} | " + " | ".join(cells)
                     + f" | {_fmt(float(np.mean(hds)) if hds else None)} | {_fmt(float(np.mean(eces)) if eces else None)}"
                     + f" | {c['seconds']:.1f} | ![]({c['png']}) |")
    return "\n".join(lines) + "\n"
