"""`spinesegdiff evaluate`: Dice, HD95 and uncertainty quality per case, with a report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from SpineSegDiffLib.core.device_names import DEVICE_CHOICES


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="spinesegdiff-demo", help="model .zip or id (default: the bundled demo model)")
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="labelled folders: SPIDER-format, a retraining set (dataset.json) or the real-MRI folder (cases.csv)")
    p.add_argument("--out", type=Path, required=True, help="report folder: evaluation.json, report.md, one PNG per case")
    p.add_argument("--samples", type=int, default=None, help="ensemble size (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--cases", default=None, help="comma-separated case ids to score (default: all)")
    p.add_argument("--limit-cases", type=int, default=None, help="score at most this many cases per folder")
    p.add_argument("--sequences", default=None, help="SPIDER sequences, e.g. t2")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--progress", default="bar", choices=["bar", "json", "none"])


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from SpineSegDiffLib.core.atomic import write_text
    from SpineSegDiffLib.core.progress import make_progress
    from SpineSegDiffLib.evaluation.metrics import aggregate, score_result
    from SpineSegDiffLib.evaluation.report import case_overview_png, markdown_report
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.registry import resolve_model
    from SpineSegDiffLib.training.data import iter_labelled_cases

    model = load_model(resolve_model(args.model), args.device)
    # None means "the model's"; 0 is a value (refused by validate), never the default
    settings = SegmentSettings(samples=model.default("samples", 5) if args.samples is None else args.samples,
                               steps=model.default("steps", 10) if args.steps is None else args.steps)
    settings.validate()
    wanted = set(args.cases.split(",")) if args.cases else None
    sequences = tuple(args.sequences.split(",")) if args.sequences else None
    args.out.mkdir(parents=True, exist_ok=True)
    progress = make_progress(args.progress)
    results = []
    try:
        for folder in args.data:
            for case in iter_labelled_cases(folder, sequences, args.limit_cases):
                if wanted is not None and case.case_id not in wanted:
                    continue
                t0 = time.perf_counter()
                res = segment_image(case.image, model, settings,
                                    lambda stage, f, msg="", **kw: progress.update(stage, f, f"{case.case_id}: {msg}"),
                                    input_name=case.case_id)
                scores = score_result(res, sitk.GetArrayFromImage(case.label), case.annotated, case.body_only)
                png = args.out / f"{case.case_id}.png"
                case_overview_png(png, case.image, case.label, res, title=case.case_id)
                results.append({"case": case.case_id, "set": case.source, "scores": scores,
                                "seconds": round(time.perf_counter() - t0, 2), "png": png.name,
                                "summary": res.summary["structures"]})
                print(f"{case.case_id}: " + ", ".join(_short(k, v) for k, v in scores["structures"].items()),
                      file=sys.stderr)
    finally:
        progress.close()
    if not results:
        from SpineSegDiffLib.core.errors import InputError

        raise InputError("no cases were scored: check --data, --cases and --sequences")
    report = {"model": model.identity, "settings": {"samples": settings.samples, "steps": settings.steps,
                                                    "device": str(model.device)},
              "aggregate": aggregate(results), "cases": results}
    write_text(args.out / "evaluation.json", json.dumps(report, indent=2) + "\n")
    write_text(args.out / "report.md", markdown_report(report))
    print(f"report written to {args.out / 'report.md'}")
    return 0


def _short(key: str, entry: dict) -> str:
    from SpineSegDiffLib.evaluation.metrics import headline_score

    headline = headline_score(entry)
    return f"{key} {headline[0]} {headline[1]:.3f}" if headline else f"{key} n/a"
