#!/usr/bin/env python
"""Fit the measurement intervals' calibration (k, f per family) on unseen phantoms.

    .venv/bin/python scripts/calibrate_measurement_intervals.py --model MODEL.zip \
        --cases 8 --samples 5 --steps 10 [--seed 3001] [--from-json PAIRS.json]

Phantoms of ``--seed`` (default 3001: the demo model trains on phantom seeds 1-4, tests on
1001, fits its logit calibration on 2001; the tests use seeds 0-21) are segmented by the
model with S samples x K steps; each level's measurement on the fused result and its SD
over the samples are paired with the same measurement on the generator's truth mask
(matched by level value, kept only where the predicted instance lies mostly on the true
one, so a level error is not a measurement error). ``measure/calibration.py`` fits
interval = fused +- max(k * SD, f * resolution floor) to cover 95 % of them per family.
Writes SpineSegDiffLib/resources/measurement_calibration.json (with where it comes from)
and benchmarks/results/measurement_calibration-DATE.{json,md}. No real case is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402


def case_pairs(seed: int, index: int, model, samples: int, steps: int) -> list[dict]:
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.measure.calibration import FAMILY_OF, voxel_edge
    from SpineSegDiffLib.measure.case import measure_case

    sequence = ("t2", "t1")[index % 2]  # both contrasts the model reads
    case = generate_case(seed, index, (sequence,))
    image = case.images[sequence]
    truth = sitk.GetArrayFromImage(case.mask)
    truth_semantic = sitk.GetImageFromArray(semantic_from_spider_values(truth))
    truth_semantic.CopyInformation(case.mask)
    result = segment_image(image, model, SegmentSettings(samples=samples, steps=steps, sample_masks=True,
                                                         cache=False))
    report, instances = measure_case(result.labelmap, image, result.sample_labelmaps, calibration=None)
    truth_report, _ = measure_case(truth_semantic, image, calibration=None)
    truth_rows = {(r["value"], r["measure"]): r["fused"] for r in truth_report["measurements"]}
    pred = sitk.GetArrayFromImage(instances)
    edge = voxel_edge(image.GetSpacing())
    pairs = []
    for r in report["measurements"]:
        if r["measure"] not in FAMILY_OF or r["fused"] is None:
            continue
        true_value = truth_rows.get((r["value"], r["measure"]))
        on = pred == r["value"]
        if true_value is None or not on.any() or np.mean(truth[on] == r["value"]) < 0.5:
            continue
        pairs.append({"case": f"phantom{seed}_{index}_{sequence}", "level": r["level"], "measure": r["measure"],
                      "family": FAMILY_OF[r["measure"]], "fused": r["fused"], "sd": r["sd"],
                      "truth": true_value, "voxel_edge_mm": round(edge, 4)})
    return pairs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=BUNDLED_DEMO_MODEL)
    p.add_argument("--seed", type=int, default=3001)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10: the demo model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--from-json", type=Path, help="refit from the pairs of an earlier run (no segmentation)")
    p.add_argument("--out", type=Path, default=REPO / "SpineSegDiffLib" / "resources" / "measurement_calibration.json")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()

    from SpineSegDiffLib.core.atomic import write_text
    from SpineSegDiffLib.measure.calibration import FAMILIES, fit_family
    from SpineSegDiffLib.measure.intervals import prediction_half_width_factor

    stem = args.results / f"measurement_calibration-{dt.date.today().isoformat()}"
    if args.from_json:
        run = json.loads(args.from_json.read_text())
    else:
        from SpineSegDiffLib.inference.loading import load_model

        model = load_model(args.model, args.device)
        run = {"model": args.model.name, "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest()[:16],
               "model_id": model.identity.get("id"), "model_version": model.identity.get("version"),
               "seed": args.seed, "cases": args.cases, "samples": args.samples, "steps": args.steps, "pairs": []}
        args.results.mkdir(parents=True, exist_ok=True)
        for i in range(args.cases):
            t0 = time.perf_counter()
            run["pairs"] += case_pairs(args.seed, i, model, args.samples, args.steps)
            print(f"phantom {args.seed}/{i}: {len(run['pairs'])} pairs so far, {time.perf_counter() - t0:.0f} s",
                  flush=True)
            stem.with_suffix(".json").write_text(json.dumps(run, indent=1) + "\n")  # resumable record
    fits = {}
    for family in FAMILIES:
        pairs = [q for q in run["pairs"] if q["family"] == family]
        if len(pairs) >= 20:  # fewer would fit noise
            fits[family] = fit_family(pairs, family)
    calibration = {
        "method": "interval = fused +- max(k * SD over the samples, f * resolution floor); floor: "
                  "length e, area e*sqrt(A), volume e*V^(2/3) (e = voxel edge); fitted for 95 % coverage "
                  "with the narrowest mean width",
        "fitted_on": f"{len({q['case'] for q in run['pairs']})} phantom patients of seed {run['seed']} "
                     f"({len(run['pairs'])} measurements; the seed is never used for training or "
                     f"testing), truth = the same measurement on the generator's truth mask",
        "phantom_seed": run["seed"], "model": run["model"], "model_sha256": run["model_sha256"],
        "model_id": run.get("model_id"), "model_version": run.get("model_version"),
        "samples": run["samples"], "steps": run["steps"], "date": dt.date.today().isoformat(),
        "families": fits, "not_calibrated": "ratios, percentages and grades (wedge, disc-to-CSF, slip %, Meyerding)",
    }
    write_text(args.out, json.dumps(calibration, indent=2) + "\n")  # never half a calibration
    lines = [f"# Measurement interval calibration ({run['model']}, S={run['samples']}, K={run['steps']})", "",
             calibration["fitted_on"] + ".", "", "| family | pairs | k | f | coverage on the fit | mean half-width |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {fam} | {v['n']} | {v['k']} | {v['f']} | {v['coverage']:.0%} | {v['mean_half_width']} |"
              for fam, v in fits.items()]
    raw, n = {}, run["samples"]
    factor = prediction_half_width_factor(n) if n >= 2 else 0.0
    for q in run["pairs"]:  # the raw sample interval's coverage on the same pairs, for comparison
        raw.setdefault(q["family"], []).append(q["sd"] is not None and abs(q["fused"] - q["truth"]) <= factor * q["sd"])
    lines += ["", "Coverage of the uncalibrated sample interval on the same pairs (approximately "
                  f"fused +- t(0.975, {n - 1}) * SD * sqrt(1 + 1/{n})): " +
              ", ".join(f"{fam} {sum(v) / len(v):.0%}" for fam, v in raw.items())]
    if args.from_json:
        stem = args.from_json.with_suffix("")
    done = len({q["case"] for q in run["pairs"]})
    if done < run["cases"]:
        lines += ["", f"The run was stopped after {done} of the {run['cases']} phantom patients asked for."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
