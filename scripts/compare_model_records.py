#!/usr/bin/env python
"""Print, side by side, the scores recorded in model files' model.json (metrics.evaluation),
as a Markdown table: phantom Dice/HD95/AUROC/ECE per structure and the real-data measures
per set. Only models scored on the same cases and settings should be compared; the
evaluated cases and settings of each are printed under the table.

    .venv/bin/python scripts/compare_model_records.py A.zip B.zip [--names 1.2.0,2.0.0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = [  # (group, structure, measure, label)
    ("phantom", "spinal_canal", "dice", "phantom Dice canal"),
    ("phantom", "vertebrae", "dice", "phantom Dice vertebrae"),
    ("phantom", "discs", "dice", "phantom Dice discs"),
    ("phantom", "spinal_canal", "hd95_mm", "phantom HD95 canal (mm)"),
    ("phantom", "vertebrae", "hd95_mm", "phantom HD95 vertebrae (mm)"),
    ("phantom", "discs", "hd95_mm", "phantom HD95 discs (mm)"),
    ("phantom", "spinal_canal", "uncertainty_auroc", "phantom AUROC canal"),
    ("phantom", "vertebrae", "uncertainty_auroc", "phantom AUROC vertebrae"),
    ("phantom", "discs", "uncertainty_auroc", "phantom AUROC discs"),
    ("phantom", "discs", "ece", "phantom ECE discs"),
]
for s in ("VB2", "VB1", "VB3"):
    ROWS += [(f"real:{s}", "vertebrae", "recall", f"{s} body recall"),
             (f"real:{s}", "vertebrae", "body_box_dice", f"{s} Dice in the bodies' boxes"),
             (f"real:{s}", "vertebrae", "span_volume_ratio", f"{s} vertebra volume in span ÷ bodies"),
             (f"real:{s}", "vertebrae", "span_volume_ratio_range", f"{s} same, min–max"),
             (f"real:{s}", "discs", "disc_space_recall", f"{s} disc spaces called disc"),
             (f"real:{s}", "vertebrae", "disc_space_false_positive_share", f"{s} disc spaces called vertebra"),
             (f"real:{s}", "vertebrae", "decided_uncertainty_auroc", f"{s} uncertainty AUROC (decided)")]
ROWS += [("real:IVD", "discs", "dice", "IVD disc Dice"),
         ("real:IVD", "discs", "band_dice", "IVD disc Dice in the discs' band ± 10 mm"),
         ("real:IVD", "discs", "between_discs_vertebra_share", "IVD between discs called vertebra"),
         ("real:IVD", "discs", "decided_uncertainty_auroc", "IVD uncertainty AUROC (decided)")]


def metrics(path: Path) -> dict:
    from SpineSegDiffLib.model.metadata import read_metadata  # checked model.json, no torch

    return read_metadata(path).get("metrics", {})


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "–".join(f"{v:.2f}" for v in value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--names", default=None, help="comma-separated column names (default: file names)")
    args = p.parse_args()
    names = args.names.split(",") if args.names else [m.name for m in args.models]
    records = [metrics(m) for m in args.models]
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for group, structure, measure, label in ROWS:
        values = [r.get("evaluation", {}).get(group, {}).get("structures", {}).get(structure, {}).get(measure)
                  for r in records]
        if any(v is not None for v in values):
            print(f"| {label} | " + " | ".join(cell(v) for v in values) + " |")
    for name, r in zip(names, records):
        print(f"\n{name}: settings {json.dumps(r.get('evaluation_settings'))}; "
              f"{len(r.get('evaluated_cases', []))} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
