"""`spinesegdiff measure`: levels and measurements of an existing segmentation (no model).

For a segmentation edited by hand, one from another tool, or a manual reference: the
same levels, measurements, warnings and files as `segment --output-measurements`, without
an ensemble (so no sample spread and no interval: only the fused value, or why not).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from SpineSegDiffLib.core.errors import InputError

SEMANTIC_VALUES = {0, 1, 2, 3}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("labelmap", type=Path,
                   help="semantic labelmap (.nii.gz .nii .nrrd .mha): 1 spinal canal, 2 vertebrae, 3 discs")
    p.add_argument("--image", type=Path,
                   help="the MRI it segments, on the same grid (for the disc-to-CSF signal ratio)")
    p.add_argument("--output-instances", type=Path,
                   help="level labels: a labelmap of SPIDER values, or .seg.nrrd with one segment per level")
    p.add_argument("--output-measurements", type=Path, help="per-level measurements (.csv or .json)")
    p.add_argument("--output-measurements-plot", type=Path, help="PNG: disc heights and canal area per level")
    p.add_argument("--output-summary", type=Path, help="JSON: levels, warnings, measurements, timing")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data.imageio import read_label, read_mri
    from SpineSegDiffLib.data.outputs import check_output_paths, write_summary
    from SpineSegDiffLib.measure import files
    from SpineSegDiffLib.measure.case import measure_case

    outputs = (args.output_instances, args.output_measurements, args.output_measurements_plot, args.output_summary)
    if all(o is None for o in outputs):
        raise InputError("nothing to write: give --output-measurements, --output-instances, "
                         "--output-measurements-plot and/or --output-summary")
    files.check_outputs(args.output_instances, args.output_measurements)
    check_output_paths({"instances": args.output_instances, "measurements": args.output_measurements,
                        "measurements_plot": args.output_measurements_plot, "summary": args.output_summary},
                       [p for p in (args.labelmap, args.image) if p is not None])
    image = read_mri(args.image) if args.image is not None else None
    labelmap = read_label(args.labelmap, image, args.image)
    values = set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(labelmap)))
    if not values <= SEMANTIC_VALUES:
        raise InputError(f"{args.labelmap} holds values {sorted(values - SEMANTIC_VALUES)[:5]}: give a semantic "
                         "labelmap (1 spinal canal, 2 vertebrae, 3 discs), as `segment --output-segmentation` writes")
    t0 = time.perf_counter()
    report, instances = measure_case(labelmap, image)
    report["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    files.write_outputs(report, instances, labelmap, instances_path=args.output_instances,
                        measurements_path=args.output_measurements, plot_path=args.output_measurements_plot)
    if args.output_summary is not None:
        write_summary({"input": str(args.labelmap), "levels_and_measurements": report}, args.output_summary)
    print_report(report)
    return 0


def print_report(report: dict) -> None:
    """The summary lines: levels, how many measurements were made, every warning, what could not be measured."""
    levels, *rest = report_lines(report)
    measured = sum(1 for r in report["measurements"] if r["fused"] is not None)
    for line in [levels, f"measurements: {measured} of {len(report['measurements'])} made", *rest]:
        print(line)


def report_lines(report: dict) -> list[str]:
    """The levels line, then one line per warning and per reason a value is missing (also `segment`'s)."""
    names = ", ".join(lv["name"] + ("(partial)" if lv["partial"] else "") for lv in report["levels"]) or "none"
    return ([f"levels (anchored at: {report['anchor']}): {names}"] + [f"warning: {w}" for w in report["warnings"]]
            + not_measured_lines(report))


def not_measured_lines(report: dict) -> list[str]:
    """One line per reason a value is missing, with how many rows it concerns."""
    reasons: dict[str, int] = {}
    for row in report["not_measured"]:
        reasons[row["why"]] = reasons.get(row["why"], 0) + 1
    return [f"not measured ({count}): {why}" for why, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
