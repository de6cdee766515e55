#!/usr/bin/env python
"""The model grid's ceiling: how well a perfect prediction on the grid can still match the
reference once mapped back, per grid spacing, with the network's pixel cost beside it.

    .venv/bin/python benchmarks/grid_ceiling.py --spacings 2.0,1.5,1.0 --phantoms 4 \
        [--real ../shared/data/real]

For each case and spacing: every annotated structure of the reference is taken onto the
model grid as a 0/1 map (linear, as the image is), mapped back onto the input's exact
geometry the way the pipeline maps its probabilities (linear), thresholded at 0.5 and
compared with the reference (Dice, and for the IVD set's discs the Dice inside the discs'
band). That is the best Dice a network on that grid could reach; the pixels per slice
(network time scales with them on the CPU) are printed as a ratio to the first spacing.
Phantoms: unseen phantoms of the new generator (seed 1001, as the demo model's scores).
Results: results/grid_ceiling-<date>.json / .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def round_trip_dice(image, reference: np.ndarray, annotated: list[str], spacing_mm: float,
                    body_only: bool) -> tuple[dict, int]:
    """Dice per annotated structure of the reference after grid and back; pixels per slice."""
    from SpineSegDiffLib.core.labels import BY_KEY
    from SpineSegDiffLib.evaluation import partial_label_scores as pls
    from SpineSegDiffLib.evaluation.metrics import dice
    from SpineSegDiffLib.grid.geometry import GridSpec, to_model_grid

    size = _size_for(image, spacing_mm)
    grid = to_model_grid(image, GridSpec(spacing_mm=spacing_mm, size=size, min_slice_spacing_mm=2.0))
    out = {}
    si_axis = pls.superior_axis(image.GetDirection())
    spacing_zyx = tuple(image.GetSpacing()[::-1])
    for key in annotated:
        ref = reference == BY_KEY[key].value
        back = grid.round_trip(ref)
        entry = {"dice": round(float(dice(back, ref)), 4)}
        if key == "discs" and "vertebrae" not in annotated:
            band = pls.reference_band(ref, si_axis, spacing_zyx)
            entry["band_dice"] = round(float(dice(back & band, ref & band)), 4)
        out[key + (" (bodies)" if body_only and key == "vertebrae" else "")] = entry
    return out, size * size


def _size_for(image, spacing_mm: float) -> int:
    """Smallest multiple of 16 whose in-plane extent at this spacing covers the image."""
    extent = max(s * n for s, n in zip(image.GetSpacing(), image.GetSize()))
    return int(math.ceil(extent / spacing_mm / 16.0) * 16)


def _phantom_cases(count: int):
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic

    for i in range(count):
        case = generate_case(seed=1001, index=i)
        ref = spider_to_semantic(sitk.GetArrayFromImage(case.mask))
        yield f"phantom1001_{i}", "phantom", case.images["t2"], ref, ["spinal_canal", "vertebrae", "discs"], False


def _real_cases(folder: Path):
    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder

    for case in read_real_folder(folder):
        image, semantic = case.load()
        annotated = [k for k in ("spinal_canal", "vertebrae", "discs") if k in case.annotated]
        yield case.case_id, f"real:{case.set}", image, sitk.GetArrayFromImage(semantic), annotated, case.body_only


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spacings", default="2.0,1.5,1.0", help="in-plane grid spacings (mm), comma-separated")
    p.add_argument("--phantoms", type=int, default=4)
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    spacings = [float(v) for v in args.spacings.split(",")]
    cases = list(_phantom_cases(args.phantoms))
    if (args.real / "cases.csv").is_file():
        cases += list(_real_cases(args.real))
    rows = []
    for case_id, set_name, image, ref, annotated, body_only in cases:
        for spacing in spacings:
            scores, pixels = round_trip_dice(image, ref, annotated, spacing, body_only)
            rows.append({"case": case_id, "set": set_name, "spacing_mm": spacing, "pixels": pixels,
                         "scores": scores})
            print(case_id, spacing, json.dumps(scores), flush=True)
    table = summarise(rows, spacings)
    stamp = dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"grid_ceiling-{stamp}.json").write_text(json.dumps({"rows": rows, "summary": table}, indent=1))
    (args.out / f"grid_ceiling-{stamp}.md").write_text(markdown(table, spacings))
    print(markdown(table, spacings))
    return 0


def summarise(rows: list[dict], spacings: list[float]) -> dict:
    """Mean and minimum round-trip Dice per set, structure and spacing; mean pixel ratio."""
    out: dict = {}
    for r in rows:
        for key, entry in r["scores"].items():
            for measure, value in entry.items():
                out.setdefault(f"{r['set']} {key} {measure}", {}).setdefault(r["spacing_mm"], []).append(value)
    table = {name: {str(s): {"mean": round(float(np.mean(v)), 4), "min": round(float(np.min(v)), 4)}
                    for s, v in by.items()} for name, by in sorted(out.items())}
    base = [r["pixels"] for r in rows if r["spacing_mm"] == spacings[0]]
    table["pixel ratio"] = {str(s): round(float(np.mean([r["pixels"] for r in rows if r["spacing_mm"] == s])
                                                / np.mean(base)), 2) for s in spacings}
    return table


def markdown(table: dict, spacings: list[float]) -> str:
    head = "| set / structure / measure | " + " | ".join(f"{s} mm mean (min)" for s in spacings) + " |"
    lines = [head, "|---" * (len(spacings) + 1) + "|"]
    for name, by in table.items():
        if name == "pixel ratio":
            continue
        lines.append(f"| {name} | " + " | ".join(f"{by[str(s)]['mean']:.3f} ({by[str(s)]['min']:.3f})"
                                                 for s in spacings) + " |")
    lines.append("| pixels per slice (network cost), ratio | "
                 + " | ".join(f"{table['pixel ratio'][str(s)]:.2f}×" for s in spacings) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
