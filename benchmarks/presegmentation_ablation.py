#!/usr/bin/env python
"""Presegmentation ablation (issue 11 section 1): the presegmenter alone, the ensemble from
pure noise (the noise start), and the ensemble from the noised presegmentation at several
t_max / K, on unseen phantoms (seed 1001) and on the real development cases held out from
the demo model's training (odd positions of each set in cases.csv).

    .venv/bin/python benchmarks/presegmentation_ablation.py --model MODEL_WITH_PRESEGMENTER.zip \\
        [--phantoms 2] [--real-cases 1] [--samples 3] [--t-max 200,400,600] [--steps 3,5]

Per configuration: Dice / HD95 and the real-data measures of evaluation/metrics.py
(score_case), voxel uncertainty AUROC and ECE, network evaluations, wall time; for the
presegmentation starts also "preseg_error_auroc": does the ensemble's uncertainty still
find the voxels where the presegmentation was wrong (AUROC of the uncertainty against the
presegmentation's errors, around either mask). The presegmenter's own uncertainty is the
binary entropy of its probability. Results: benchmarks/results/presegmentation_ablation-*.json.
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


def _entropy(p):
    import numpy as np

    p = np.clip(p, 1e-6, 1 - 1e-6)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def presegmenter_alone(model, image):
    """(masks, probabilities, uncertainty (C, z, y, x), grid, seconds, evaluations) of the head alone."""
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.pipeline import labelmap_on_input
    from SpineSegDiffLib.inference.presegmentation import presegment_grid

    t0 = time.perf_counter()
    grid = to_model_grid(image, model.grid_spec)
    prob, _ = presegment_grid(model, grid.slices)
    on_input = labelmap_on_input(prob, grid, image, 30.0)
    labels = on_input.labels.full()
    masks = np.stack([labels == value for value in (1, 2, 3)])
    prob_arrays = np.stack([on_input.probability_map.full(c) for c in range(3)])
    ent = np.stack([sitk.GetArrayFromImage(grid.to_input_geometry(_entropy(prob[:, c]), interpolation="linear"))
                    for c in range(prob.shape[1])])
    return masks, prob_arrays, ent, grid, time.perf_counter() - t0, int(grid.slices.shape[0])


def preseg_error_auroc(pre_masks, uncertainty, reference, annotated, body_only):
    """AUROC of the ensemble uncertainty against the presegmentation's errors, per structure
    the reference fully decides (around either mask)."""
    from scipy import ndimage

    from SpineSegDiffLib.core.labels import STRUCTURES
    from SpineSegDiffLib.evaluation.metrics import auroc

    out = {}
    for i, s in enumerate(STRUCTURES):
        if not annotated[i] or (body_only and s.key == "vertebrae"):
            continue
        ref = reference == s.value
        region = ndimage.binary_dilation(pre_masks[i] | ref, iterations=2)
        errors = (pre_masks[i] != ref) & region
        if errors.any() and (~errors & region).any():
            out[s.key] = round(float(auroc(uncertainty[i][region], errors[region])), 4)
    return out


def cases_to_score(args):
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider import spider_to_semantic

    for i in range(args.phantoms):
        c = generate_case(seed=1001, index=i, sequences=("t2",))
        yield f"phantom1001_{i}_t2", "phantom", c.images["t2"], spider_to_semantic(
            sitk.GetArrayFromImage(c.mask)), np.ones(3, bool), False
    if args.real_cases and (args.real / "cases.csv").is_file():
        from SpineSegDiffLib.data.realdata import read_real_folder, split_train_held_out

        by_set: dict[str, list] = {}
        for case in split_train_held_out(read_real_folder(args.real))[1]:  # never trained on
            by_set.setdefault(case.set, []).append(case)
        for name, held in by_set.items():
            for case in held[: args.real_cases]:
                image, semantic = case.load()
                ann = np.array([k in case.annotated for k in ("spinal_canal", "vertebrae", "discs")])
                yield case.case_id, f"real:{name}", image, sitk.GetArrayFromImage(semantic), ann, case.body_only


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a model file with a presegmenter")
    p.add_argument("--phantoms", type=int, default=2, help="unseen T2 phantoms (seed 1001)")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--real-cases", type=int, default=1, help="held-out real cases per set (0: none)")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--noise-steps", type=int, default=10, help="K of the noise start (today's default)")
    p.add_argument("--t-max", default="200,400,600", help="comma-separated t_max of the presegmentation start")
    p.add_argument("--steps", default="3,5", help="comma-separated K of the presegmentation start")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.evaluation.metrics import aggregate, body_only_regions, score_case
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(args.model, args.device)
    if not model.metadata.get("presegmentation"):
        p.error(f"{args.model} has no presegmenter; add one with scripts/add_presegmenter.py")
    configs = [("noise", None, args.noise_steps)] + [
        ("presegmentation", int(t), int(k)) for t in args.t_max.split(",") for k in args.steps.split(",")]
    rows: dict[str, list] = {"presegmenter": []}
    timing: dict[str, dict] = {"presegmenter": {"seconds": 0.0, "evaluations": 0}}
    preseg_found: dict[str, list] = {}
    for case_id, set_name, image, ref, ann, body_only in cases_to_score(args):
        spacing_zyx = tuple(image.GetSpacing()[::-1])
        pre_masks, pre_prob, pre_unc, grid, seconds, evals = presegmenter_alone(model, image)
        regions = body_only_regions(grid, ref) if body_only else None
        rows["presegmenter"].append({"case": case_id, "set": set_name, "scores": score_case(
            pre_masks, pre_prob, pre_unc, ref, ann, body_only, spacing_zyx, None, regions)})
        timing["presegmenter"]["seconds"] += seconds
        timing["presegmenter"]["evaluations"] += evals
        for start, t_max, steps in configs:
            name = "noise_K%d" % steps if start == "noise" else f"preseg_t{t_max}_K{steps}"
            settings = SegmentSettings(samples=args.samples, steps=steps, start=start, t_max=t_max, cache=False)
            result = segment_image(image, model, settings)
            probs = np.stack([sitk.GetArrayFromImage(x) for x in result.probabilities])
            unc = np.stack([sitk.GetArrayFromImage(u) for u in result.structure_uncertainty])
            rows.setdefault(name, []).append({"case": case_id, "set": set_name, "scores": score_case(
                result.masks, probs, unc, ref, ann, body_only, spacing_zyx, result.summary, regions)})
            t = timing.setdefault(name, {"seconds": 0.0, "evaluations": 0})
            t["seconds"] += result.summary["timings"]["total_s"]
            t["evaluations"] += result.summary["network_evaluations"] + result.summary["presegmentation_evaluations"]
            if start == "presegmentation":
                preseg_found.setdefault(name, []).append(
                    {"case": case_id, "set": set_name,
                     "auroc": preseg_error_auroc(pre_masks, unc, ref, ann, body_only)})
            print(case_id, name, json.dumps(rows[name][-1]["scores"]["structures"]), flush=True)

    out = {"model": model.identity, "device": str(model.device), "samples": args.samples,
           "presegmentation": model.metadata["presegmentation"],
           "cases": [r["case"] for r in rows["presegmenter"]], "configurations": {}}
    for name, items in rows.items():
        entry = {"by_set": aggregate(items), "seconds": round(timing[name]["seconds"], 1),
                 "network_evaluations": timing[name]["evaluations"]}
        if name in preseg_found:
            by_set: dict[str, dict[str, list]] = {}
            for item in preseg_found[name]:
                for key, value in item["auroc"].items():
                    by_set.setdefault(item["set"], {}).setdefault(key, []).append(value)
            entry["preseg_error_auroc"] = {s: {k: round(float(np.mean(v)), 4) for k, v in d.items()}
                                           for s, d in by_set.items()}
        out["configurations"][name] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"presegmentation_ablation-{model.device.type}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
