#!/usr/bin/env python
"""Where "vertebra" spills into the disc spaces of vertebral-body-only references (issue 11).

    .venv/bin/python benchmarks/disc_space_errors.py [--model MODEL.zip] [--cases VB2_02,VB2_04]
        [--samples 5 --steps 10] [--real ../shared/data/real] [--tag TAG]

For each VB case: the disc spaces the labelled bodies imply (`evaluation.metrics.body_only_regions`,
the region of the "disc spaces called vertebra" measure) and

* the ceiling of the model's grid: the reference taken onto the model grid and back (linear,
  threshold 0.5), i.e. a perfect network at this grid: body box Dice and disc spaces called vertebra;
* the model (`spinesegdiff segment`, S samples x K steps, a real subprocess): body recall, box
  Dice, the share of its false positives inside the boxes that lie within 3 mm of a body,
  disc spaces called vertebra / disc, and the disc-space voxels called vertebra by their
  distance from the nearest labelled body (0-1, 1-2, 2-3, 3-5, > 5 mm);
* the same on the model grid, where the network works: the grid's own disc spaces (the regions
  the training targets use) called vertebra at its pixel centres, by pixels from a body.

Each case says whether the demo model trained on it (even positions of each set in cases.csv,
as `scripts/train_demo_model.py` splits them) or not. Results: results/disc_space_errors-<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

BANDS_MM = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, float("inf")))
_VERTEBRA, _DISC = 2, 3


def grid_ceiling(body: np.ndarray, grid, gaps: np.ndarray) -> dict:
    from SpineSegDiffLib.evaluation.partial_label_scores import body_box_dice

    back = grid.round_trip(body)
    return {"body_box_dice": round(body_box_dice(back, body), 4),
            "disc_spaces_called_vertebra": round(float((back & gaps).sum() / gaps.sum()), 4)}


def model_scores(labels: np.ndarray, body: np.ndarray, gaps: np.ndarray, spacing_zyx) -> dict:
    from scipy import ndimage

    from SpineSegDiffLib.evaluation.partial_label_scores import body_box_dice, body_boxes

    vertebra = labels == _VERTEBRA
    distance = ndimage.distance_transform_edt(~body, sampling=spacing_zyx)
    by_band = {}
    for lo, hi in BANDS_MM:
        band = gaps & (distance > lo) & (distance <= hi)
        by_band[f"{lo:g}-{hi:g} mm"] = {"voxels": int(band.sum()),
                                        "called_vertebra": round(float((vertebra & band).sum() / band.sum()), 4)
                                        if band.any() else None}
    boxes = body_boxes(body)
    box_false = vertebra & boxes & ~body
    return {"body_recall": round(float((vertebra & body).sum() / body.sum()), 4),
            "box_false_positives_within_3mm": round(float((box_false & (distance <= 3.0)).sum() / box_false.sum()), 4)
            if box_false.any() else None,
            "body_box_dice": round(body_box_dice(vertebra, body), 4),
            "disc_spaces_called_vertebra": round(float((vertebra & gaps).sum() / gaps.sum()), 4),
            "disc_spaces_called_disc": round(float(((labels == _DISC) & gaps).sum() / gaps.sum()), 4),
            "disc_space_vertebra_by_distance": by_band}


def grid_level_scores(body: np.ndarray, gaps: np.ndarray, grid, output) -> dict:
    """The model grid's own disc spaces (the training targets' regions) called vertebra.

    ``body``, ``gaps``: from ``metrics.body_only_grid_regions``. The output is sampled at the
    grid's pixel centres (nearest voxel); the distance is in grid pixels from the nearest body
    pixel of the same sagittal slice."""
    from scipy import ndimage

    vertebra = grid.labels_to_grid(output) == _VERTEBRA
    distance = np.stack([ndimage.distance_transform_edt(~b) if b.any() else np.full(b.shape, np.inf) for b in body])
    by_pixels = {}
    for name, near in (("1 px", distance <= 1), ("2 px", (distance > 1) & (distance <= 2)), ("> 2 px", distance > 2)):
        band = gaps & near
        by_pixels[name] = round(float(vertebra[band].mean()), 4) if band.any() else None
    return {"pixel_mm": round(grid.grid_image.GetSpacing()[0], 3),
            "disc_spaces_called_vertebra": round(float(vertebra[gaps].mean()), 4),
            "by_pixels_from_a_body": by_pixels}


def segment(image_path: Path, model: Path, samples: int, steps: int, out: Path) -> float:
    import time

    run_cli = "import sys; from SpineSegDiffLib.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", run_cli, "segment", str(image_path), "--model", str(model),
           "--samples", str(samples), "--steps", str(steps), "--no-cache", "--progress", "none",
           "--output-segmentation", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: segmenting {image_path.name} failed:\n{done.stderr.strip()}")
    return time.perf_counter() - t0


def markdown(rows: list[dict], model: str, samples: int, steps: int) -> str:
    bands = [f"{lo:g}-{hi:g} mm" for lo, hi in BANDS_MM]
    lines = [f"# Disc spaces called vertebra ({model}, S={samples}, K={steps})", "",
             "| case | trained on | grid ceiling: box Dice; disc spaces called vertebra | model: recall; box Dice; "
             "box false positives within 3 mm | called vertebra / disc | called vertebra at "
             + " / ".join(bands) + " from a body | on the grid: pixel mm; called vertebra; at 1 / 2 / > 2 px |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, m = r["ceiling"], r["model"]
        by = " / ".join(f"{m['disc_space_vertebra_by_distance'][b]['called_vertebra']:.3f}"
                        if m["disc_space_vertebra_by_distance"][b]["called_vertebra"] is not None else "–"
                        for b in bands)
        lines.append(f"| {r['case']} | {'yes' if r['trained_on'] else 'no'} | {c['body_box_dice']:.3f}; "
                     f"{c['disc_spaces_called_vertebra']:.3f} | {m['body_recall']:.3f}; {m['body_box_dice']:.3f}; "
                     f"{_fmt(m['box_false_positives_within_3mm'])} | {m['disc_spaces_called_vertebra']:.3f} / "
                     f"{m['disc_spaces_called_disc']:.3f} | {by} | {_grid_cell(r.get('grid_level'))} |")
    return "\n".join(lines) + "\n"


def _grid_cell(g: dict | None) -> str:
    if g is None:
        return "–"
    near = " / ".join(_fmt(v, 3) for v in g["by_pixels_from_a_body"].values())
    return f"{g['pixel_mm']:.2f}; {g['disc_spaces_called_vertebra']:.3f}; {near}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="model file (default: the bundled demo model)")
    p.add_argument("--cases", default="VB2_02,VB2_04", help="comma-separated VB case ids, or 'all'")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", default=dt.date.today().isoformat())
    args = p.parse_args()

    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder, split_train_held_out
    from SpineSegDiffLib.evaluation.metrics import body_only_grid_regions, body_only_regions
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL

    model = args.model or BUNDLED_DEMO_MODEL
    if not model.is_file():
        p.error(f"no model file at {model}")
    if not (args.real / "cases.csv").is_file():
        p.error(f"no real-data folder with cases.csv at {args.real} (--real)")
    cases = read_real_folder(args.real)
    train = {case.case_id for case in split_train_held_out(cases)[0]}
    wanted = None if args.cases == "all" else set(args.cases.split(","))
    chosen = [c for c in cases if c.body_only and (wanted is None or c.case_id in wanted)]
    missing = (wanted or set()) - {c.case_id for c in chosen}
    if missing:
        p.error(f"not vertebral-body-only cases of {args.real}: {', '.join(sorted(missing))}")
    spec = ModelInfo.read(model).grid_spec
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            image, semantic = case.load()
            body = sitk.GetArrayFromImage(semantic) == _VERTEBRA
            grid = to_model_grid(image, spec)
            reference = np.where(body, _VERTEBRA, 0)
            on_grid = body_only_grid_regions(grid, reference)
            gaps = body_only_regions(grid, reference, on_grid)[0]
            out = Path(tmp) / f"{case.case_id}.nii.gz"
            seconds = segment(case.image_path, model, args.samples, args.steps, out)
            output = sitk.ReadImage(str(out))
            labels = sitk.GetArrayFromImage(output)
            row = {"case": case.case_id, "set": case.set, "trained_on": case.case_id in train,
                   "ceiling": grid_ceiling(body, grid, gaps),
                   "model": model_scores(labels, body, gaps, tuple(image.GetSpacing()[::-1])),
                   "grid_level": grid_level_scores(on_grid[0], on_grid[1], grid, output),
                   "seconds": round(seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = markdown(rows, model.name, args.samples, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"disc_space_errors-{args.tag}"  # a tag like "2.2.0-cpu" holds dots: no with_suffix
    (args.out / f"{stem}.json").write_text(json.dumps({"model": str(model.name), "samples": args.samples,
                                                     "steps": args.steps, "rows": rows}, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
