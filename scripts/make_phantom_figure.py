"""Make docs/images/phantom_vs_real.png: a phantom T2 mid-sagittal slice beside a real one.

Usage (from the repository root):
    python scripts/make_phantom_figure.py [--real-dir ../shared/data/real] [--case IVD_11]
        [--seed 0] [--index 1] [--out docs/images/phantom_vs_real.png]

The real case's labels are partial (IVD_* label discs only, VB2_* bodies only); they are
drawn as they are. Real labels are values 1..N per structure: every value > 0 is drawn as
the structure the set labels.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.data.phantom import generate_case  # noqa: E402
from SpineSegDiffLib.data.spider_labels import spider_to_semantic  # noqa: E402
from SpineSegDiffLib.evaluation.preview import PreviewPanel, save_preview  # noqa: E402

# which semantic structure each real set labels (see the real data README)
_REAL_SET_STRUCTURE = {"IVD": 3, "VB1": 2, "VB2": 2, "VB3": 2}


def _real_panel(real_dir: Path, case: str) -> PreviewPanel:
    rows = {r["case"]: r for r in csv.DictReader((real_dir / "cases.csv").open())}
    image = sitk.ReadImage(str(real_dir / "images" / f"{case}.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(real_dir / "masks" / f"{case}.nii.gz")))
    # the labelled slices' middle is the mid-sagittal slice (x is the last numpy axis)
    xs = np.nonzero(mask.reshape(-1, mask.shape[2]).any(axis=0))[0]
    k = int(round(xs.mean())) if xs.size else mask.shape[2] // 2
    labels = np.where(mask[:, :, k] > 0, _REAL_SET_STRUCTURE[rows[case]["set"]], 0).astype(np.uint8)
    spacing = image.GetSpacing()
    return PreviewPanel(sitk.GetArrayFromImage(image)[:, :, k], f"real {case} ({rows[case]['sequence']})",
                        labels, spacing=(spacing[2], spacing[1]))


def _phantom_panel(seed: int, index: int, sequence: str) -> PreviewPanel:
    case = generate_case(seed, index, (sequence,))
    k = case.metadata["mid_sagittal_slice"]
    spacing = case.mask.GetSpacing()
    labels = spider_to_semantic(sitk.GetArrayFromImage(case.mask)[:, :, k])
    return PreviewPanel(sitk.GetArrayFromImage(case.images[sequence])[:, :, k],
                        f"phantom seed {seed} case {index} {sequence}", labels,
                        spacing=(spacing[2], spacing[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-dir", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--case", default="IVD_11")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "phantom_vs_real.png")
    args = parser.parse_args()
    phantom, real = _phantom_panel(args.seed, args.index, "t2"), _real_panel(args.real_dir, args.case)
    # each image once bare (to judge appearance) and once with its labels
    bare = [replace(p, labels=None, title=p.title.split(" (")[0] + " image") for p in (phantom, real)]
    save_preview(args.out, [bare[0], phantom, bare[1], real], height=448)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
