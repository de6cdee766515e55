#!/usr/bin/env python
"""Which per-voxel uncertainty ranks the errors best, and how calibrated the fused probabilities are (issue 11).

    .venv/bin/python benchmarks/uncertainty_definitions.py [--model MODEL.zip] [--samples 5 --steps 10]
        [--test-phantoms 6] [--calibration-phantoms 3] [--real ../shared/data/real --real-cases VB2_04,...]
        [--tag TAG]

The ensemble is drawn once per case (S samples, K steps); every definition below is computed from
the same samples, mapped onto the input geometry and scored by ``evaluation.metrics.score_case``
(voxel AUROC of the uncertainty against the errors on and around each mask; on the real cases the
AUROC inside the region each partial reference decides):

* ``max_over_steps``: the entropy of the sample-mean probability, maximum over the fused steps;
* ``fused``: the entropy of the fused probability, the one the masks threshold at 0.5;
* ``last_step``: the entropy of the sample-mean probability at the last step;
* ``mutual_information``: the samples' disagreement (maximum over fused steps);
* ``fused_on_input``: the entropy of the fused probability after it is mapped back onto the
  input's voxels (1 on the 0.5 level set the masks follow, between grid voxels too): what runs
  show since 2026-12-03 (``inference/probability_entropy.py``);
* ``blend``: the mean of ``max_over_steps`` and ``fused_on_input``.

The first four are computed on the model grid and mapped back linearly, as runs did before.

Each at S and at the first 3 samples (the model record's scoring). Calibration: a temperature per
structure on the logit of the fused probability (the 0.5 level, hence every mask, stays), fitted on
phantoms of the calibration seed (seed 1002, as ``scripts/train_demo_model.py``) on the input's
voxels inside the scored region; ECE of the fused probabilities on the unseen phantoms (seed 1001) before
and after. Results: results/uncertainty_definitions-<tag>.{json,md}; ``--markdown-from JSON``
rewrites the Markdown of an earlier result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

DEFINITIONS = ("max_over_steps", "fused", "last_step", "mutual_information", "fused_on_input", "blend")
_EPS = 1e-4


def grid_maps(samples: list[np.ndarray], fused_steps: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused probability and every uncertainty definition, (n, C, H, W) on the model grid."""
    from SpineSegDiffLib.model import levels
    from SpineSegDiffLib.model.diffusion_config import fusion_weight_array

    stats = levels.statistics_of_levels(samples, slice(None), second_order=True)
    fused = levels.fuse_step_means(stats.mean_probability, fusion_weight_array(fused_steps))
    return fused, {"max_over_steps": levels.entropy_of_mean(stats),
                   "fused": levels.binary_entropy(fused),
                   "last_step": levels.binary_entropy(stats.mean_probability[-1]),
                   "mutual_information": levels.mutual_information(stats)}


def tempered(p: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """sigmoid(logit(p) / T) per structure (axis 0 of (C, z, y, x)); T > 0 keeps the 0.5 level."""
    q = np.clip(p, _EPS, 1 - _EPS)
    logit = np.log(q / (1 - q)) / temperature.reshape(-1, 1, 1, 1)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature minimising binary cross-entropy (1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    def bce(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))

    return float(np.exp(minimize_scalar(bce, bounds=(-3.0, 3.0), method="bounded").x))


def on_input(image, grid, pred, settings, fused_steps, samples: list[np.ndarray]):
    """The run's result from these samples, and every definition mapped onto the input grid (C, z, y, x)."""
    from dataclasses import replace

    from SpineSegDiffLib.grid.map_back import axis_maps, linear_to_input
    from SpineSegDiffLib.inference.on_input import result_on_input
    from SpineSegDiffLib.model.levels import binary_entropy

    fused, maps = grid_maps(samples, fused_steps)
    variant = replace(pred, probabilities=fused, sample_levels=samples)  # the outputs read no grid entropy
    result = result_on_input(image, grid, variant, settings, fused_steps)
    probabilities = np.stack([sitk_array(p) for p in result.probabilities])  # decided, mapped back linearly
    axes, shape = axis_maps(grid), result.labels.shape
    unc = {name: linear_to_input(np.moveaxis(m, 1, 0), axes, shape) for name, m in maps.items()}
    # the entropy of the probability mapped back: 1 on the 0.5 level set the masks follow, between grid pixels too
    unc["fused_on_input"] = binary_entropy(probabilities)
    unc["blend"] = 0.5 * (unc["max_over_steps"] + unc["fused_on_input"])
    return result, probabilities, unc


def sitk_array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def aurocs(scores: dict) -> dict:
    """Per structure the AUROC a record reports (where the reference decides, else on and around the
    masks), and the combined one."""
    out = {}
    for key, entry in scores["structures"].items():
        value = entry.get("decided_uncertainty_auroc")
        value = entry.get("uncertainty_auroc") if value is None else value
        if value is not None:
            out[key] = value
    if scores.get("uncertainty_auroc") is not None:
        out["combined"] = scores["uncertainty_auroc"]
    return out


def write_markdown(out: dict, path: Path, tag: str) -> None:
    def cells(block: dict) -> str:
        return " / ".join(f"{k} {v:.3f}" for k, v in block.items() if k != "combined")

    lines = [f"# Uncertainty definitions and fused-probability calibration ({tag})", "",
             f"Model {out['model']}, K = {out['steps']}; temperatures (canal, vertebrae, discs) fitted on "
             f"{out['calibration']}: {out['temperatures']}.", "",
             "| set | definition | AUROC per structure | combined |", "|---|---|---|---|"]
    for key, block in out["means"].items():
        for name in DEFINITIONS:
            combined = block[name].get("combined")
            lines.append(f"| {key} | {name} | {cells(block[name])} | "
                         f"{'–' if combined is None or combined != combined else f'{combined:.3f}'} |")
        for name in ("ece", "ece_tempered", "dice"):
            if block[name]:
                lines.append(f"| {key} | {name} | {cells(block[name])} | |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REPO / "SpineSegDiffLib/resources/models/spinesegdiff-demo.zip"))
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--test-phantoms", type=int, default=6)
    p.add_argument("--calibration-phantoms", type=int, default=3)
    p.add_argument("--real", type=Path, default=REPO.parent / "shared/data/real")
    p.add_argument("--real-cases", default="", help="comma-separated real case ids (held out from training)")
    p.add_argument("--tag", default=f"cpu-{dt.date.today().isoformat()}")
    p.add_argument("--markdown-from", type=Path, default=None, help="only rewrite the Markdown of this JSON result")
    args = p.parse_args()
    if args.markdown_from is not None:
        write_markdown(json.loads(args.markdown_from.read_text()), args.markdown_from.with_suffix(".md"), args.tag)
        return 0

    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import predict_on_grid
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(Path(args.model), "cpu")
    settings = SegmentSettings(samples=args.samples, steps=args.steps, cache=False)
    fused_steps = model.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
    sizes = sorted({3, args.samples})

    def ensemble(image):
        grid = to_model_grid(image, model.grid_spec)
        return grid, predict_on_grid(model, grid.slices, settings)

    # 1. temperatures from the calibration phantoms, on the input grid, inside the region ECE is scored in
    logits, targets = {s: [[], [], []] for s in sizes}, {s: [[], [], []] for s in sizes}
    for i in range(args.calibration_phantoms):
        case = generate_case(seed=1002, index=i)
        semantic = spider_to_semantic(sitk.GetArrayFromImage(case.mask))
        for seq, image in case.images.items():
            grid, pred = ensemble(image)
            for s in sizes:
                result, probabilities, _ = on_input(image, grid, pred, settings, fused_steps, pred.sample_levels[:s])
                for c in range(3):
                    truth = semantic == c + 1
                    region = ndimage.binary_dilation(result.masks[c] | truth, iterations=2)
                    q = np.clip(probabilities[c][region], _EPS, 1 - _EPS).astype(np.float64)
                    logits[s][c].append(np.log(q / (1 - q)))
                    targets[s][c].append(truth[region].astype(np.float64))
            print(f"calibration phantom 1002_{i}_{seq}", flush=True)
    temperature = {s: np.array([fit_temperature(np.concatenate(logits[s][c]), np.concatenate(targets[s][c]))
                                for c in range(3)], np.float32) for s in sizes}
    del logits, targets
    print("temperatures", {s: t.round(3).tolist() for s, t in temperature.items()}, flush=True)

    # 2. every definition on the unseen phantoms and the real cases
    from SpineSegDiffLib.evaluation.metrics import body_only_regions, score_case

    rows = []
    from scored_cases import phantom_cases, real_cases

    wanted = args.real_cases.split(",") if args.real_cases else []
    cases = phantom_cases(args.test_phantoms) + real_cases(args.real, wanted)
    for set_name, case_id, image, ref, annotated, body_only in cases:
        t0 = time.perf_counter()
        grid, pred = ensemble(image)
        regions = body_only_regions(grid, ref) if body_only else None
        spacing_zyx = tuple(image.GetSpacing()[::-1])
        row = {"case": case_id, "set": set_name, "samples": {}}
        for s in sizes:
            result, probabilities, unc = on_input(image, grid, pred, settings, fused_steps, pred.sample_levels[:s])

            def score(uncertainty, probs, _result=result):
                return score_case(_result.masks, probs, uncertainty, ref, annotated, body_only, spacing_zyx,
                                  None, regions, image.GetDirection())

            entry = {}
            for name in DEFINITIONS:
                scores = score(unc[name], probabilities)
                entry[name] = aurocs(scores)
            entry["ece"] = {k: v["ece"] for k, v in scores["structures"].items() if v.get("ece") is not None}
            entry["dice"] = {k: v["dice"] for k, v in scores["structures"].items() if v.get("dice") is not None}
            calibrated = tempered(probabilities, temperature[s])
            scores = score(unc["max_over_steps"], calibrated)
            entry["ece_tempered"] = {k: v["ece"] for k, v in scores["structures"].items()
                                     if v.get("ece") is not None}
            row["samples"][str(s)] = entry
        rows.append(row)
        print(case_id, f"{time.perf_counter() - t0:.0f} s", json.dumps(row["samples"]), flush=True)

    means = {}
    for s in map(str, sizes):
        for set_name in sorted({r["set"] for r in rows}):
            items = [r["samples"][s] for r in rows if r["set"] == set_name]
            block = {}
            for name in (*DEFINITIONS, "ece", "ece_tempered", "dice"):
                keys = sorted({k for it in items for k in it[name]})
                block[name] = {k: round(float(np.mean([it[name][k] for it in items if k in it[name]])), 4)
                               for k in keys}
            means[f"{set_name} S={s}"] = block
    out = {"model": Path(args.model).name, "steps": args.steps, "samples": args.samples,
           "temperatures": {str(s): t.round(4).tolist() for s, t in temperature.items()},
           "calibration": f"{args.calibration_phantoms} phantom patients (t1+t2), seed 1002",
           "means": means, "cases": rows}
    results = REPO / "benchmarks/results"
    (results / f"uncertainty_definitions-{args.tag}.json").write_text(json.dumps(out, indent=1))
    write_markdown(out, results / f"uncertainty_definitions-{args.tag}.md", args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
