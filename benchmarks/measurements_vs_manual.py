#!/usr/bin/env python
"""Levels and measurements of the bundled demo model vs the manual masks of real cases.

    .venv/bin/python benchmarks/measurements_vs_manual.py [--samples 5 --steps 10] \
        [--sets VB3,IVD,VB1,VB2] [--max-cases N] [--tag TAG]

Cases: those the demo model did not train on (odd positions within each set of
cases.csv, as scripts/train_demo_model.py splits them). Reported:
  * level accuracy: VB3 bodies (values 1..5 = L1..L5) and IVD discs (1 = L5/S1 ... 5 = L1/L2):
    the share of manual bodies / discs whose voxels the prediction mostly gives the right level;
  * measurement error: the same measurement on the manual mask and on the prediction
    (IVD: disc heights and volume; VB sets: body heights and volume), each manual structure
    matched to the predicted instance that overlaps it most, so a level error does not
    count as a measurement error: mean absolute error, bias, a Bland-Altman PNG;
  * coverage: the share of structures whose manual value lies inside the ensemble's raw
    95 % interval (the samples' spread) and inside the calibrated one (fitted on phantoms
    only, measure/calibration.py: these cases are an independent check of it);
  * the time levels + measurements add to a run.
Writes JSON + Markdown + one Bland-Altman PNG (numbers only, no image data) to --out.

Full run (all 12 held-out cases, the final model; a GPU makes it minutes):
    .venv/bin/python benchmarks/measurements_vs_manual.py --model MODEL.zip --samples 5 --steps 10 \
        --device cuda --tag gpu-S5K10
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

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402

COMPARED = {"IVD": ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm", "disc_volume_ml"),
            "VB": ("body_height_anterior_mm", "body_height_middle_mm", "body_height_posterior_mm", "body_volume_ml")}


def held_out(cases):
    from SpineSegDiffLib.data.realdata import split_train_held_out

    return split_train_held_out(cases)[1]


def expected_value(case_set: str, manual: int) -> int | None:
    """SPIDER value a manual label stands for, where the set gives levels."""
    if case_set == "VB3":
        return 7 - manual  # 1 = L1 (6) ... 5 = L5 (2)
    if case_set == "IVD":
        return 200 + manual  # 1 = L5/S1 (201) ... 5 = L1/L2 (205)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=BUNDLED_DEMO_MODEL)
    p.add_argument("--real", type=Path, default=None, help="real-data folder (default: ../shared/data/real)")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sets", default="VB3,IVD,VB1,VB2")
    p.add_argument("--max-cases", type=int, default=None, help="stop after this many cases (short runs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--from-json", type=Path, help="rewrite the tables of an earlier run's JSON (no segmentation)")
    args = p.parse_args()
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
        s = data["summary"]
        args.samples, args.steps, args.model = s["samples"], s["steps"], Path(s["model"])
        hits = {k: [True] * v["right"] + [False] * (v["of"] - v["right"]) for k, v in s["level_accuracy"].items()}
        write_results(args, [type("C", (), {"case_id": c})() for c in s["cases"]], hits, data["pairs"], s["timings"],
                      s.get("calibration"))
        return 0

    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.measure.case import measure_case
    from SpineSegDiffLib.measure.measurements import measure_levels

    real = args.real or REPO.parent / "shared" / "data" / "real"
    if not real.exists():
        real = Path("/work/shared/data/real")
    sets = args.sets.split(",")
    cases = [c for c in held_out(read_real_folder(real)) if c.set in sets]
    cases.sort(key=lambda c: sets.index(c.set))
    if args.max_cases:
        cases = cases[:args.max_cases]
    model = load_model(args.model, args.device)
    # the per-user sample cache: a rerun (or another benchmark on the same cases) draws nothing again
    settings = SegmentSettings(samples=args.samples, steps=args.steps, sample_masks=True, cache=True)
    level_hits: dict[str, list[bool]] = {}
    pairs: dict[str, list[dict]] = {}
    timings = []
    for case in cases:
        image, _ = case.load()  # checks the mask lies on the image's grid
        mask = sitk.ReadImage(str(case.mask_path))  # the instance values (levels, bodies)
        mask.CopyInformation(image)
        manual = sitk.GetArrayFromImage(mask)
        t0, c0 = time.perf_counter(), time.process_time()
        result = segment_image(image, model, settings)
        t1, c1 = time.perf_counter(), time.process_time()
        report, instances_img = measure_case(result.labelmap, image, result.sample_labelmaps)
        t2, c2 = time.perf_counter(), time.process_time()
        # CPU seconds too: on a shared machine wall times say more about the neighbours
        timings.append({"case": case.case_id, "segment_s": round(t1 - t0, 2), "measure_s": round(t2 - t1, 2),
                        "segment_cpu_s": round(c1 - c0, 2), "measure_cpu_s": round(c2 - c1, 2),
                        "samples_from_cache": result.summary.get("cache", {}).get("samples_from_cache")})
        calibration = report["calibration"]
        instances = sitk.GetArrayFromImage(instances_img).astype(np.int32)
        base = np.where((instances > 100) & (instances < 200), instances - 100, instances)
        rows = {(r["value"], r["measure"]): r for r in report["measurements"]}
        kind = "IVD" if case.set == "IVD" else "VB"
        # manual structures as instances: discs keep their SPIDER value, bodies get 10 + k
        ref = np.zeros(manual.shape, np.int32)
        values = []
        for k in (int(v) for v in np.unique(manual) if v):
            v = 200 + k if kind == "IVD" else 10 + k
            ref[manual == k] = v
            values.append(v)
        ref_measured = measure_levels(ref, mask, values, image, bodies_only=(kind == "VB"))
        for k, v in zip(sorted(int(x) for x in np.unique(manual) if x), values):
            voxels = base[manual == k]
            wanted = voxels[(voxels > 200)] if kind == "IVD" else voxels[(voxels > 1) & (voxels < 100)]
            got = int(np.bincount(wanted).argmax()) if wanted.size else None
            exp = expected_value(case.set, k)
            if exp is not None:
                level_hits.setdefault(case.set, []).append(got == exp)
            if got is None:
                continue
            pred_value = got if got > 200 or not any(lv["value"] == 100 + got for lv in report["levels"]) else 100 + got
            for measure in COMPARED[kind]:
                ref_value = ref_measured.get((v, measure))
                row = rows.get((pred_value, measure))
                if ref_value is None or ref_value.value is None or row is None or row["fused"] is None:
                    continue
                inside = None if row["low95"] is None else bool(row["low95"] <= ref_value.value <= row["high95"])
                cal = row.get("cal_low95")
                inside_cal = None if cal is None else bool(cal <= ref_value.value <= row["cal_high95"])
                pairs.setdefault(f"{kind}:{measure}", []).append(
                    {"case": case.case_id, "manual": ref_value.value, "fused": row["fused"],
                     "mean": row["mean"], "low95": row["low95"], "high95": row["high95"], "inside": inside,
                     "cal_low95": cal, "cal_high95": row.get("cal_high95"), "inside_calibrated": inside_cal})
        print(f"{case.case_id}: segment {t1 - t0:.1f} s, levels+measurements {t2 - t1:.1f} s, "
              f"anchor {report['anchor']}, warnings {len(report['warnings'])}", flush=True)

        write_results(args, cases[:len(timings)], level_hits, pairs, timings, calibration)
    return 0


def _coverage(items: list[dict], key: str) -> float | None:
    inside = [i[key] for i in items if i.get(key) is not None]
    return round(float(sum(inside) / len(inside)), 3) if inside else None


def _width(items: list[dict], low: str, high: str) -> float | None:
    import numpy as np

    widths = [i[high] - i[low] for i in items if i.get(low) is not None]
    return round(float(np.median(widths)), 3) if widths else None


def write_results(args, cases, level_hits, pairs, timings, calibration=None) -> None:
    """JSON, Markdown and a Bland-Altman PNG under --out; rewritten after each case."""
    import numpy as np

    summary = {"model": str(args.model.name), "samples": args.samples, "steps": args.steps,
               "date": dt.date.today().isoformat(), "cases": [c.case_id for c in cases],
               "level_accuracy": {s: {"right": int(sum(h)), "of": len(h), "share": round(float(np.mean(h)), 3)}
                                  for s, h in level_hits.items()},
               "measurements": {}, "timings": timings, "calibration": calibration}
    seg = sum(t["segment_s"] for t in timings)
    mea = sum(t["measure_s"] for t in timings)
    summary["measure_time_share"] = round(mea / seg, 3) if seg else None
    mea_cpu = sum(t.get("measure_cpu_s", 0.0) for t in timings)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, items in pairs.items():
        m = np.array([i["manual"] for i in items])
        f = np.array([i["fused"] for i in items])
        summary["measurements"][key] = {
            "n": len(items), "mae": round(float(np.mean(np.abs(f - m))), 3),
            "bias_pred_minus_manual": round(float(np.mean(f - m)), 3),
            "limits_of_agreement": [round(float(np.mean(f - m) - 1.96 * np.std(f - m, ddof=1)), 3),
                                    round(float(np.mean(f - m) + 1.96 * np.std(f - m, ddof=1)), 3)] if len(items) > 1 else None,
            "coverage_raw": _coverage(items, "inside"),
            "coverage_calibrated": _coverage(items, "inside_calibrated"),
            "median_width_raw": _width(items, "low95", "high95"),
            "median_width_calibrated": _width(items, "cal_low95", "cal_high95")}
    stem = f"measurements_vs_manual-{args.tag}-{dt.date.today().isoformat()}"
    args.out.mkdir(parents=True, exist_ok=True)
    if pairs:  # one Bland-Altman panel per measurement, in one PNG
        cols = 4
        rows_n = -(-len(pairs) // cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.4 * rows_n), squeeze=False)
        for ax in axes.ravel()[len(pairs):]:
            ax.axis("off")
        for ax, (key, items) in zip(axes.ravel(), pairs.items()):
            m = np.array([i["manual"] for i in items])
            d = np.array([i["fused"] for i in items]) - m
            ax.scatter((d / 2 + m), d, s=12)
            ax.axhline(d.mean(), color="k")
            if len(d) > 1:
                for k in (-1.96, 1.96):
                    ax.axhline(d.mean() + k * d.std(ddof=1), color="k", ls="--")
            ax.set_title(f"{key} (n={len(items)})", fontsize=8)
            ax.set_xlabel("mean of prediction and manual", fontsize=7)
            ax.set_ylabel("prediction - manual", fontsize=7)
        fig.suptitle(f"Bland-Altman, {summary['model']} S={args.samples} K={args.steps}, "
                     f"{len(summary['cases'])} held-out cases", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out / f"{stem}-bland_altman.png", dpi=70)
        plt.close(fig)
    (args.out / f"{stem}.json").write_text(json.dumps({"summary": summary, "pairs": pairs}, indent=2) + "\n")
    lines = [f"# Measurements vs manual masks ({summary['model']}, S={args.samples}, K={args.steps})", "",
             f"Held-out cases ({len(summary['cases'])}): {', '.join(summary['cases'])}", "",
             "| set | levels right |", "|---|---|"]
    lines += [f"| {s} | {v['right']}/{v['of']} ({v['share']:.0%}) |" for s, v in summary["level_accuracy"].items()]
    pct = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    lines += ["", "| measurement | n | MAE | bias | 95 % limits of agreement | coverage raw | coverage calibrated "
                  "| median width raw | median width calibrated |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, v in summary["measurements"].items():
        loa = "–" if v["limits_of_agreement"] is None else f"{v['limits_of_agreement'][0]} .. {v['limits_of_agreement'][1]}"
        lines.append(f"| {key} | {v['n']} | {v['mae']} | {v['bias_pred_minus_manual']} | {loa} "
                     f"| {pct(v['coverage_raw'])} | {pct(v['coverage_calibrated'])} "
                     f"| {v['median_width_raw']} | {v['median_width_calibrated']} |")
    cal = calibration or {}
    lines += ["", "Raw interval: the samples' 95 % prediction interval. Calibrated: "
                  + (f"{cal.get('method')}; {cal.get('fitted_on')} ({cal.get('model')}, S={cal.get('samples')}, "
                     f"K={cal.get('steps')})" if cal.get("applied") else "none applied") + ".",
              "", f"Levels + measurements add {mea:.1f} s to {seg:.1f} s of segmentation "
                  f"({summary['measure_time_share']:.1%}; {mea_cpu:.1f} CPU s for the measurements; "
                  f"segmentation samples read from the sample cache: "
                  f"{sum(t.get('samples_from_cache') or 0 for t in timings)})." if seg else "",
              "", f"Bland-Altman: `{stem}-bland_altman.png`."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
