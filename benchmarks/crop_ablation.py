#!/usr/bin/env python
"""Crop ablation (issue 14, "fewer pixels"): the ensemble on the spine's slices (--crop slices)
and on its box (--crop auto) against the whole field of view (--crop off), same model, same
seed, same S and K, on
unseen T2 phantoms (seed 1001, full ground truth) and on real held-out development cases.

    .venv/bin/python benchmarks/crop_ablation.py [--phantoms 3] [--real VB2_04,IVD_20] \\
        [--samples 3] [--steps 10] [--threads 1]

Per case and setting: the scores of evaluation/metrics.score_result against the reference
(Dice per structure; recall / box Dice / volume ratio / band Dice on the partial real
labels), the Dice of the cropped masks against the uncropped ones, network seconds (the
ensemble, plus the presegmentation pass the crop needs), total seconds, network
evaluations, the pixel fraction and slices kept. Ratios are within this run.
Results: benchmarks/results/crop_ablation-<device>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from SpineSegDiffLib.inference.settings import SegmentSettings

STRUCTURE_KEYS = ("spinal_canal", "vertebrae", "discs")
CROPS: dict[str, tuple[str, float]] = {}  # configuration name -> (--crop, in-plane margin), set by main
# what each kind of reference is scored by (metrics.score_result's keys), shown in the table
SHOWN = ("dice", "recall", "body_box_dice", "span_volume_ratio", "band_dice", "between_discs_vertebra_share")


def cases(args):
    """(case id, set, image, reference labelmap array, annotated (3,) bool, body only) to score."""
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic

    for i in range(args.phantoms):
        c = generate_case(seed=1001, index=i, sequences=("t2",))
        yield (f"phantom1001_{i}_t2", "phantom", c.images["t2"],
               spider_to_semantic(sitk.GetArrayFromImage(c.mask)), np.ones(3, bool), False)
    wanted = [c for c in args.real.split(",") if c]
    if wanted and (args.real_folder / "cases.csv").is_file():
        from SpineSegDiffLib.data.realdata import read_real_folder

        for case in (c for c in read_real_folder(args.real_folder) if c.case_id in wanted):
            image, semantic = case.load()
            annotated = np.array([k in case.annotated for k in STRUCTURE_KEYS])
            yield case.case_id, case.set, image, sitk.GetArrayFromImage(semantic), annotated, case.body_only


def network_seconds(summary: dict) -> float:
    t = summary["timings"]
    return t["network_s"] + t.get("presegmentation_network_s", 0.0)


def shown_scores(scores: dict) -> dict:
    return {k: {m: v[m] for m in SHOWN if v.get(m) is not None} for k, v in scores["structures"].items()}


def agreement(crop_masks, full_masks) -> dict:
    from SpineSegDiffLib.evaluation.metrics import dice

    return {k: round(dice(crop_masks[i], full_masks[i]), 4) for i, k in enumerate(STRUCTURE_KEYS)
            if full_masks[i].any() or crop_masks[i].any()}


def markdown(record: dict) -> str:
    lines = [(f"# Crop ablation ({record['date']}, {record['device']}, S = {record['samples']}, "
             f"K = {record['steps']}, seed {record['seed']})"), "",
             (f"Machine: {record['machine']}; load average {record['load_start']} at start, "
             f"{record['load_end']} at end. Model {record['model']['id']} {record['model']['version']}; "
             f"lateral crop margin {record['slice_margin_mm']} mm."), "",
             "Scores against the reference (Δ against `--crop off`):", "",
             "| case | structure | score | off | " + " | ".join(f"{c} | Δ" for c in list(CROPS)[1:]) + " |",
             "|---|---|---|---|" + "---|---|" * (len(CROPS) - 1)]
    for row in record["cases"]:
        for key, metrics in row["off"]["scores"].items():
            for metric, value in metrics.items():
                cells = []
                for crop in list(CROPS)[1:]:
                    other = row[crop]["scores"].get(key, {}).get(metric)
                    cells += ["", ""] if other is None else [f"{other:.4f}", f"{other - value:+.4f}"]
                lines.append(f"| {row['case']} | {key} | {metric} | {value:.4f} | {' | '.join(cells)} |")
    lines += ["", "Cost and agreement with `--crop off` (masks' Dice canal / vertebrae / discs):", "",
              ("| case | setting | slices kept | pixel fraction | network s (× off) | total s (× off) | "
              "evaluations | Dice vs off |"), "|---|---|---|---|---|---|---|---|"]
    for row in record["cases"]:
        off = row["off"]
        for crop in CROPS:
            r = row[crop]
            agree = " / ".join(f"{v:.4f}" for v in row["agreement"][crop].values())
            lines.append(f"| {row['case']} | {crop} | {r['slices_kept']} / {r['slices']} | {r['pixel_fraction']:.3f} | "
                         f"{r['network_s']:.1f} ({r['network_s'] / off['network_s']:.2f}) | "
                         f"{r['total_s']:.1f} ({r['total_s'] / off['total_s']:.2f}) | "
                         f"{r['network_evaluations']} + {r['presegmentation_evaluations']} | {agree} |")
    lines += ["", "Over all cases (sums; pixel fraction weighted by slices), and the phantoms' mean Dice:", "",
              ("| setting | network × off | total × off | pixel fraction | phantom Dice canal / vert. / discs | "
              "largest phantom Dice drop vs off |"), "|---|---|---|---|---|---|"]
    for crop in CROPS:
        t = record["summary"][crop]
        lines.append(f"| {crop} | {t['network_ratio']:.3f} | {t['total_ratio']:.3f} | {t['pixel_fraction']:.3f} | "
                     f"{' / '.join(f'{v:.4f}' for v in t['phantom_dice'].values())} | "
                     f"{t['phantom_largest_dice_drop']:+.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "SpineSegDiffLib/resources/models/spinesegdiff-demo.zip",
                   help="a model file with a presegmenter (default: the bundled demo model)")
    p.add_argument("--phantoms", type=int, default=3, help="unseen T2 phantoms (seed 1001)")
    p.add_argument("--real-folder", type=Path, default=None,
                   help="the real development set (default: $SPINESEGDIFF_REAL_DATA, else ../shared/data/real)")
    p.add_argument("--real", default="VB2_04,IVD_20", help="comma-separated held-out real case ids ('' for none)")
    p.add_argument("--margins", default=f"{SegmentSettings.crop_margin_mm:g},40",
                   help="comma-separated in-plane margins (mm) of --crop auto, one run each")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", default=None, help="file name date tag (default: today)")
    args = p.parse_args()
    if args.real_folder is None:
        from SpineSegDiffLib.data.realdata import default_real_folder

        args.real_folder = default_real_folder() or REPO.parent / "shared" / "data" / "real"

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from SpineSegDiffLib.evaluation.metrics import score_result
    from SpineSegDiffLib.inference.cropping import CROP_SLICE_MARGIN_MM
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image

    model = load_model(args.model, args.device)
    if not model.metadata.get("presegmentation"):
        p.error(f"{args.model} has no presegmenter: --crop auto would not crop")
    tag = args.tag or dt.date.today().isoformat()
    margins = [float(m) for m in args.margins.split(",") if m]
    # configuration name -> (--crop, margin); off first: the others are compared with it
    CROPS.update({"off": ("off", 0.0), "slices": ("slices", 0.0)})
    CROPS.update({f"auto {m:g} mm": ("auto", m) for m in margins})
    record = {"date": tag, "device": str(model.device), "model": model.identity, "samples": args.samples,
              "steps": args.steps, "seed": args.seed, "margins_mm": margins,
              "slice_margin_mm": CROP_SLICE_MARGIN_MM, "load_start": [round(v, 2) for v in os.getloadavg()],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
                         f"({torch.get_num_threads()} threads)", "cases": []}
    for case_id, set_name, image, ref, annotated, body_only in cases(args):
        row: dict = {"case": case_id, "set": set_name}
        masks = {}
        for crop, (setting, margin) in CROPS.items():
            settings = SegmentSettings(samples=args.samples, steps=args.steps, seed=args.seed, crop=setting,
                                       crop_margin_mm=margin, cache=False, start="noise")
            result = segment_image(image, model, settings)
            s = result.summary
            info = s["settings"]["crop"]
            row[crop] = {"scores": shown_scores(score_result(result, ref, annotated, body_only)),
                         "network_s": round(network_seconds(s), 2), "total_s": s["timings"]["total_s"],
                         "network_evaluations": s["network_evaluations"],
                         "presegmentation_evaluations": s["presegmentation_evaluations"],
                         "slices": s["settings"]["grid"]["slices"],
                         "slices_kept": info.get("slices_kept", s["settings"]["grid"]["slices"]),
                         "pixel_fraction": info.get("pixel_fraction", 1.0), "crop": info}
            masks[crop] = result.masks
            print(case_id, crop, json.dumps({k: v for k, v in row[crop].items() if k != "crop"}), flush=True)
        row["agreement"] = {crop: agreement(masks[crop], masks["off"]) for crop in CROPS}
        record["cases"].append(row)
    phantoms = [r for r in record["cases"] if r["set"] == "phantom"]
    slices = sum(r["off"]["slices"] for r in record["cases"])
    record["summary"] = {}
    for crop in CROPS:
        drops = [r["off"]["scores"][k]["dice"] - r[crop]["scores"][k]["dice"] for r in phantoms
                 for k in STRUCTURE_KEYS]
        record["summary"][crop] = {
            "network_ratio": round(sum(r[crop]["network_s"] for r in record["cases"])
                                   / sum(r["off"]["network_s"] for r in record["cases"]), 3),
            "total_ratio": round(sum(r[crop]["total_s"] for r in record["cases"])
                                 / sum(r["off"]["total_s"] for r in record["cases"]), 3),
            "pixel_fraction": round(sum(r[crop]["pixel_fraction"] * r[crop]["slices"]
                                        for r in record["cases"]) / slices, 4),
            "phantom_dice": {k: round(float(np.mean([r[crop]["scores"][k]["dice"] for r in phantoms])), 4)
                             for k in STRUCTURE_KEYS} if phantoms else {},
            "phantom_largest_dice_drop": round(max(drops), 4) if drops else 0.0}
    record["load_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"crop_ablation-{model.device.type}-{tag}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    print(f"written to {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
