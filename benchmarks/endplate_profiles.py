#!/usr/bin/env python
"""Where the raters end a label at the endplates, against the dark endplate line (issue 11).

    .venv/bin/python benchmarks/endplate_profiles.py [--real ../shared/data/real]
        [--phantoms 2 --phantom-seed 8] [--tag TAG]

For every real case and for a few phantom volumes (T1 and T2): the mean image intensity along
the superior-inferior axis across the label's border at the endplates, from 6 mm outside the
label (towards the disc) to 6 mm inside, on 1 mm isotropic voxels, in the 11 sagittal slices
around the labelled structure's centre, divided by the median intensity inside the label.
Offset 0 is the first labelled voxel. Vertebral-body sets profile the bodies' top and bottom
borders; the IVD set profiles the discs' (towards the bone). On phantoms only the bodies'
borders that face a disc count. The dark endplate line shows as the profile's minimum: where it
lies against offset 0 is where a set's raters put the border, and the phantom label must agree.
Results: results/endplate_profiles-<tag>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

OFFSETS_MM = np.arange(-6, 7)  # negative: outside the label; 0: its first voxel
MIN_RUN_MM = {"body": 12, "disc": 4}  # shorter label runs along a column are edge slivers
HALF_SLAB = 5  # sagittal slices each side of the structure's centre


def border_profiles(image: np.ndarray, label: np.ndarray, kind: str,
                    facing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean (top, bottom) intensity profiles across ``label``'s borders along axis 0.

    Arrays are (z = superior->inferior, y, x) at 1 mm. ``facing``: only borders whose
    neighbour 2 mm outside lies in it count (a body's endplate facing a disc)."""
    centre = int(np.median(np.nonzero(label)[2]))
    slab = np.zeros_like(label)
    slab[:, :, max(centre - HALF_SLAB, 0):centre + HALF_SLAB + 1] = True
    label = label & slab
    reference = float(np.median(image[label]))
    tops, bottoms = [], []
    depth = label.shape[0]
    for y, x in zip(*np.nonzero(label.any(axis=0))):
        rows = np.nonzero(label[:, y, x])[0]
        for run in np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1):
            if len(run) < MIN_RUN_MM[kind]:
                continue
            top, bottom = int(run[0]), int(run[-1])
            if top + OFFSETS_MM.min() >= 0 and (facing is None or facing[top - 2, y, x]):
                tops.append(image[top + OFFSETS_MM, y, x])
            if bottom - OFFSETS_MM.min() < depth and (facing is None or facing[bottom + 2, y, x]):
                bottoms.append(image[bottom - OFFSETS_MM, y, x])
    if not tops or not bottoms:
        raise ValueError("no label border to profile")
    return np.mean(tops, axis=0) / reference, np.mean(bottoms, axis=0) / reference, len(tops) + len(bottoms)


def isotropic(image, nearest: bool):
    """``image`` on 1 mm voxels with its own origin and direction."""
    import SimpleITK as sitk

    size = [int(round(n * s)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), (1.0, 1.0, 1.0),
                         image.GetDirection(), 0, image.GetPixelID())


def real_rows(folder: Path):
    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder

    for case in read_real_folder(folder):
        image, semantic = case.load()
        if image.GetSpacing() != (1.0, 1.0, 1.0):
            image, semantic = isotropic(image, False), isotropic(semantic, True)
        label = sitk.GetArrayFromImage(semantic) > 0
        kind = "body" if case.body_only else "disc"
        yield case.case_id, case.sequence, kind, border_profiles(
            sitk.GetArrayFromImage(image).astype(np.float64), label, kind)


def phantom_rows(seed: int, count: int):
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom.case import generate_case
    from SpineSegDiffLib.data.phantom.labels import semantic_from_spider_values

    for index in range(count):
        case = generate_case(seed, index, ("t1", "t2"))
        semantic = semantic_from_spider_values(sitk.GetArrayFromImage(isotropic(case.mask, True)))
        body, disc = semantic == 2, semantic == 3
        for sequence, image in case.images.items():
            array = sitk.GetArrayFromImage(isotropic(image, False)).astype(np.float64)
            yield f"phantom {seed}/{index}", sequence, "body", border_profiles(array, body, "body", facing=disc)


def markdown(rows: list[tuple], args) -> str:
    head = " | ".join(f"{k:+d}" for k in OFFSETS_MM)
    lines = [f"# Intensity across the label border at the endplates ({dt.date.today().isoformat()})", "",
             f"Command: `.venv/bin/python benchmarks/endplate_profiles.py --phantoms {args.phantoms} "
             f"--phantom-seed {args.phantom_seed} --tag {args.tag}`. Mean intensity / median inside the "
             "label, by offset in mm from the label's first voxel (negative: outside, towards the "
             "disc or bone). **Bold**: the darkest offset (the endplate line).", "",
             f"| case | sequence | label | border | n | {head} |",
             "|---|---|---|---|---|" + "---|" * len(OFFSETS_MM)]
    for case_id, sequence, kind, (top, bottom, n) in rows:
        for side, profile in (("top", top), ("bottom", bottom)):
            darkest = int(np.argmin(profile))
            cells = " | ".join(f"**{v:.2f}**" if i == darkest else f"{v:.2f}" for i, v in enumerate(profile))
            lines.append(f"| {case_id} | {sequence} | {kind} | {side} | {n} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--phantoms", type=int, default=2, help="phantom cases (T1 and T2 each)")
    p.add_argument("--phantom-seed", type=int, default=8)
    p.add_argument("--tag", default=f"cpu-{dt.date.today().isoformat()}")
    args = p.parse_args()
    if not (args.real / "cases.csv").is_file():
        p.error(f"no real-data folder with cases.csv at {args.real} (--real)")
    if args.phantoms < 0:
        p.error("--phantoms must be 0 or more")
    rows = []
    for row in (*real_rows(args.real), *phantom_rows(args.phantom_seed, args.phantoms)):
        rows.append(row)
        top, bottom, _ = row[3]
        print(f"{row[0]} {row[1]} {row[2]}: darkest at {OFFSETS_MM[np.argmin(top)]:+d} (top), "
              f"{OFFSETS_MM[np.argmin(bottom)]:+d} (bottom) mm", flush=True)
    out = REPO / "benchmarks" / "results" / f"endplate_profiles-{args.tag}.md"
    partial = out.with_name(out.name + ".partial")
    partial.write_text(markdown(rows, args), encoding="utf-8")
    partial.replace(out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
