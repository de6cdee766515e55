"""`spinesegdiff phantom`: write synthetic lumbar MRI phantoms as a SPIDER-format folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PREVIEW_CASES = 2


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="new folder to create (images/, masks/, overview.csv, radiological_gradings.csv)")
    p.add_argument("--cases", type=int, default=10, help="number of phantom patients (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same phantoms")
    p.add_argument("--sequences", default="t1,t2",
                   help="comma-separated contrasts per case: t1, t2, stir, dixon_water, dixon_fat, random "
                        "(every tissue's intensity drawn at random); default t1,t2")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a PNG of the mid-sagittal slices of the first cases with their labels")


def _preview_panels(case) -> list:
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.spider_labels import spider_to_semantic
    from SpineSegDiffLib.evaluation.preview import PreviewPanel

    k = case.metadata["mid_sagittal_slice"]
    labels = spider_to_semantic(sitk.GetArrayViewFromImage(case.mask)[:, :, k])
    spacing = case.mask.GetSpacing()
    panels = []
    for seq, image in case.images.items():
        panels.append(PreviewPanel(np.array(sitk.GetArrayViewFromImage(image)[:, :, k]),
                                   f"phantom {case.patient_id} {seq}", labels,
                                   spacing=(spacing[2], spacing[1])))
    return panels


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib.core.errors import InputError
    from SpineSegDiffLib.data.phantom import write_spider_folder
    from SpineSegDiffLib.evaluation.preview import save_preview

    if args.preview is not None and args.preview.suffix.lower() != ".png":
        raise InputError(f"{args.preview}: the preview must be a .png file; give a name ending in .png")
    sequences = [s for s in args.sequences.split(",")]
    panels: list = []
    start = time.monotonic()

    def report(done: int, total: int, case) -> None:
        if args.preview is not None and done <= PREVIEW_CASES:
            panels.extend(_preview_panels(case))
        print(f"case {done}/{total} done ({time.monotonic() - start:.1f} s)", file=sys.stderr, flush=True)

    out = write_spider_folder(args.out, args.cases, args.seed, sequences, progress=report)
    seconds = time.monotonic() - start
    n_files = sum(1 for f in out.rglob("*") if f.is_file())
    print(f"wrote {args.cases} phantom cases ({n_files} files) to {out} "
          f"in {seconds:.1f} s ({seconds / args.cases:.2f} s per case)")
    if args.preview is not None:
        save_preview(args.preview, panels)
        print(f"preview: {args.preview}")
    return 0
