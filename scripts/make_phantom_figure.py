"""Draw today's phantom beside the old one (before the anatomy rewrite) and a real case.

Usage (from the repository root):
    python scripts/make_phantom_figure.py [--real-dir ../shared/data/real] [--case IVD_11]
        [--seed 0] [--index 1] [--out /tmp/phantom_new_old_real.png]
        [--preview docs/images/phantom_preview.png]

--out: new phantom | old phantom | real case, each as a mid-sagittal and a lateral slice
(about 25 mm off the midline, where paraspinal muscle lies behind the spine), images bare
and the phantoms' labels drawn on the mid slice. The real case's licence forbids
redistribution, so that figure goes to /tmp and is not committed. --preview writes the
phantom-only figure (new vs old, several contrasts) that docs/ shows.

The old generator is read from git (commit OLD_COMMIT, the flat ``data/phantom.py``) into a
temporary module; nothing of it is kept.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values  # noqa: E402
from SpineSegDiffLib.evaluation.preview import PreviewPanel, save_preview  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from old_phantom import old_phantom_module  # noqa: E402

LATERAL_MM = 25.0
# which semantic structure each real set labels (see the real data README)
_REAL_SET_STRUCTURE = {"IVD": 3, "VB1": 2, "VB2": 2, "VB3": 2}


def _slices(case, sequence: str, title: str, labels_on_mid: bool = True) -> list[PreviewPanel]:
    k = case.metadata["mid_sagittal_slice"]
    sx, sy, sz = case.mask.GetSpacing()
    lateral = int(np.clip(k + round(LATERAL_MM / sx), 0, case.mask.GetSize()[0] - 1))
    image = sitk.GetArrayFromImage(case.images[sequence])
    mask = sitk.GetArrayFromImage(case.mask)
    panels = []
    for kk, where in ((k, "mid"), (lateral, f"{(lateral - k) * sx:.0f} mm lateral")):
        labels = semantic_from_spider_values(mask[:, :, kk]) if labels_on_mid and kk == k else None
        panels.append(PreviewPanel(image[:, :, kk], f"{title} {sequence} {where}", labels, spacing=(sz, sy)))
    return panels


def _real_panels(real_dir: Path, case: str) -> list[PreviewPanel]:
    rows = {r["case"]: r for r in csv.DictReader((real_dir / "cases.csv").open())}
    image = sitk.ReadImage(str(real_dir / "images" / f"{case}.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(real_dir / "masks" / f"{case}.nii.gz")))
    # the labelled slices' middle is the mid-sagittal slice (x is the last numpy axis)
    xs = np.nonzero(mask.reshape(-1, mask.shape[2]).any(axis=0))[0]
    k = int(round(xs.mean())) if xs.size else mask.shape[2] // 2
    sx, sy, sz = image.GetSpacing()
    lateral = int(np.clip(k + round(LATERAL_MM / sx), 0, mask.shape[2] - 1))
    array = sitk.GetArrayFromImage(image)
    structure = _REAL_SET_STRUCTURE[rows[case]["set"]]
    panels = []
    for kk, where in ((k, "mid"), (lateral, f"{(lateral - k) * sx:.0f} mm lateral")):
        labels = np.where(mask[:, :, kk] > 0, structure, 0).astype(np.uint8) if kk == k else None
        panels.append(PreviewPanel(array[:, :, kk], f"real {case} ({rows[case]['sequence']}) {where}", labels,
                                   spacing=(sz, sy)))
    return panels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-dir", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--case", default="IVD_11")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "phantom_new_old_real.png")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write the phantom-only figure (new vs old, several contrasts) here")
    args = parser.parse_args()
    old = old_phantom_module()
    new_case = generate_case(args.seed, args.index, ("t2", "t1", "stir", "random"))
    old_case = old.generate_case(args.seed, args.index, ("t2", "t1"))
    panels = _slices(new_case, "t2", "new") + _slices(old_case, "t2", "old")
    if (args.real_dir / "cases.csv").is_file():
        panels += _real_panels(args.real_dir, args.case)
    else:
        print(f"no real data in {args.real_dir}: drawing the phantoms only")
    save_preview(args.out, panels, height=448)
    print(f"wrote {args.out}")
    if args.preview is not None:
        contrasts = [p for seq in ("t1", "stir", "random") for p in _slices(new_case, seq, "new", False)[:1]]
        save_preview(args.preview, _slices(new_case, "t2", "new") + contrasts + _slices(old_case, "t2", "old"),
                     height=384)
        print(f"wrote {args.preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
