#!/usr/bin/env python
"""Can the borders be placed finer than the 2 mm model grid after sampling? (issue 11)

    .venv/bin/python benchmarks/border_refinement.py [--model MODEL.zip] [--samples 5 --steps 10]
        [--phantoms 2] [--real-cases IVD_20,VB2_04,...] [--radii-mm 1,2] [--eps 0.05,0.1,0.2]
        [--probabilities runs/border_refinement] [--tag TAG] [--markdown-from JSON]

Two ways, against the run's own result (``base``: the fused, clean-up-decided grid probabilities
mapped back linearly, thresholded at 0.5), scored by ``evaluation.metrics.score_case`` on the
unseen phantoms (seed 1001, T1 and T2) and the real cases held out from training:

* ``guided r<R> e<EPS>``: a guided filter (He et al. 2010) of each structure's mapped-back
  probability with the input image as its guide (intensities scaled by their 1st/99th
  percentiles in the spine's box), box windows of radius R mm on every axis finer than 2.5 mm,
  regularisation EPS: the 0.5 level moves to the image's own edges within the window.
* ``shift``: the ensemble drawn on a model grid moved by half a grid pixel on every axis
  (``to_model_grid(shift=...)``); ``base+shift`` averages the two runs' mapped-back
  probabilities, ``base+seed2`` the base run and a second one on the same grid with another
  seed, which isolates what a second ensemble alone buys (twice the network time either way).

Every ensemble's fused grid probabilities are kept in ``--probabilities`` (one .npy per case and
grid), so the scoring can be repeated without drawing again. Results:
results/border_refinement-<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

GRIDS = {"base": ((0.0, 0.0, 0.0), 0), "shift": ((0.5, 0.5, 0.5), 0), "seed2": ((0.0, 0.0, 0.0), 1)}
MEASURES = ("dice", "hd95_mm", "ece", "uncertainty_auroc", "recall", "body_box_dice",
            "disc_space_false_positive_share", "disc_space_recall", "band_dice",
            "between_discs_vertebra_share", "decided_uncertainty_auroc", "span_volume_ratio")


def guided_filter(guide: np.ndarray, p: np.ndarray, sizes: tuple[int, ...], eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``p`` by ``guide`` with box windows of ``sizes`` voxels."""
    def box(a):
        return ndimage.uniform_filter(a, sizes, mode="nearest")

    mean_i, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def guided(image, probabilities: np.ndarray, radius_mm: float, eps: float) -> np.ndarray:
    """Each structure's probability (C, z, y, x) filtered with the image as guide, in the spine's box."""
    import SimpleITK as sitk

    spacing = image.GetSpacing()[::-1]
    sizes = tuple(2 * max(0, int(radius_mm / s + 0.5)) + 1 if s < 2.5 else 1 for s in spacing)
    box = ndimage.find_objects((probabilities.max(0) > 0.05).astype(np.uint8))[0]
    grown = tuple(slice(max(0, b.start - n), b.stop + n) for b, n in zip(box, sizes))
    g = sitk.GetArrayViewFromImage(image)[grown].astype(np.float32)
    low, high = np.percentile(g, [1, 99])
    g = np.clip((g - low) / max(high - low, 1e-6), 0, 1)
    out = probabilities.copy()
    for c in range(len(out)):
        out[c][grown] = np.clip(guided_filter(g, probabilities[c][grown], sizes, eps), 0, 1)
    return out


def scores(image, q: np.ndarray, ref, annotated, body_only, regions) -> dict:
    """The record's measures of labels thresholded from ``q`` (uncertainty: its entropy)."""
    from SpineSegDiffLib.evaluation.metrics import score_case
    from SpineSegDiffLib.inference.postprocess import labelmap_of_channels
    from SpineSegDiffLib.inference.probability_entropy import probability_entropy

    labels = labelmap_of_channels(q > 0.5, q)
    masks = np.stack([labels == v for v in (1, 2, 3)])
    s = score_case(masks, q, probability_entropy(q), ref, annotated, body_only, tuple(image.GetSpacing()[::-1]),
                   None, regions, image.GetDirection())
    return {f"{key}.{m}": v[m] for key, v in s["structures"].items() for m in MEASURES if v.get(m) is not None}


def write_markdown(out: dict, path: Path) -> None:
    lines = [f"# Border refinement after sampling ({out['tag']})", "",
             f"Model {out['model']}, S = {out['samples']}, K = {out['steps']}. Mean over the cases of each set."]
    for set_name, variants in out["means"].items():
        columns = [c for c in out["columns"] if any(v.get(c) is not None for v in variants.values())]
        lines += ["", f"## {set_name}", "", "| variant | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for variant, values in variants.items():
            lines.append(f"| {variant} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REPO / "SpineSegDiffLib/resources/models/spinesegdiff-demo.zip"))
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--phantoms", type=int, default=2, help="phantom patients of seed 1001 (T1 and T2 each)")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared/data/real")
    p.add_argument("--real-cases", default="IVD_20,VB2_04,VB1_03,VB3_02,VB2_08,VB1_07,VB3_06")
    p.add_argument("--radii-mm", default="1,2")
    p.add_argument("--eps", default="0.05,0.1,0.2")
    p.add_argument("--probabilities", type=Path, default=REPO / "runs/border_refinement")
    p.add_argument("--tag", default=f"cpu-{dt.date.today().isoformat()}")
    p.add_argument("--markdown-from", type=Path, default=None, help="only rewrite the Markdown of this JSON result")
    args = p.parse_args()
    if args.markdown_from is not None:
        write_markdown(json.loads(args.markdown_from.read_text()), args.markdown_from.with_suffix(".md"))
        return 0

    from scored_cases import phantom_cases, real_cases
    from SpineSegDiffLib.evaluation.metrics import body_only_regions
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.on_input import labelmap_on_input
    from SpineSegDiffLib.inference.pipeline import predict_on_grid
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(Path(args.model), "cpu")
    settings = SegmentSettings(samples=args.samples, steps=args.steps, cache=False)
    args.probabilities.mkdir(parents=True, exist_ok=True)

    cases = phantom_cases(args.phantoms) + real_cases(args.real, [c for c in args.real_cases.split(",") if c])

    rows = []
    for set_name, case_id, image, ref, annotated, body_only in cases:
        t0 = time.perf_counter()
        decided, grids = {}, {}
        for name, (shift, seed_offset) in GRIDS.items():
            stored = args.probabilities / f"{case_id}.{name}.npy"
            # the image's intensities only when this ensemble must be drawn; the geometry otherwise
            grid = grids[name] = to_model_grid(image, model.grid_spec, intensities=not stored.exists(), shift=shift)
            if not stored.exists():
                pred = predict_on_grid(model, grid.slices, replace(settings, seed=settings.seed + seed_offset))
                partial = stored.with_suffix(".partial.npy")
                np.save(partial, pred.probabilities.astype(np.float32))
                partial.replace(stored)
            on_input = labelmap_on_input(np.load(stored), grid, image, settings.min_component_mm3)
            decided[name] = np.stack([on_input.probability_map.full(c) for c in range(3)])
        regions = body_only_regions(grids["base"], ref) if body_only else None
        variants = {"base": decided["base"], "shift": decided["shift"],
                    "base+seed2": 0.5 * (decided["base"] + decided["seed2"]),
                    "base+shift": 0.5 * (decided["base"] + decided["shift"])}
        for radius in map(float, args.radii_mm.split(",")):
            for eps in map(float, args.eps.split(",")):
                variants[f"guided r{radius:g} e{eps:g}"] = guided(image, decided["base"], radius, eps)
        del decided
        for variant, q in variants.items():
            rows.append({"case": case_id, "set": set_name, "variant": variant,
                         **scores(image, q, ref, annotated, body_only, regions)})
        print(case_id, f"{time.perf_counter() - t0:.0f} s", flush=True)

    columns = sorted({k for r in rows for k in r if "." in k})
    means: dict = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            items = [r for r in rows if r["set"] == set_name and r["variant"] == variant]
            means.setdefault(set_name, {})[variant] = {
                c: round(float(np.mean([r[c] for r in items if c in r])), 4) if any(c in r for r in items) else None
                for c in columns}
    out = {"tag": args.tag, "model": Path(args.model).name, "samples": args.samples, "steps": args.steps,
           "columns": columns, "means": means, "cases": rows}
    results = REPO / "benchmarks/results"
    (results / f"border_refinement-{args.tag}.json").write_text(json.dumps(out, indent=1))
    write_markdown(out, results / f"border_refinement-{args.tag}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
