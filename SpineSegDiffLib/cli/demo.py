"""`spinesegdiff demo`: the main job on bundled defaults.

Segments a phantom the demo model never saw (and, where a real-data folder is given by
`--real-data` or $SPINESEGDIFF_REAL_DATA, a real case it did not train on) with a few samples, writes segmentation,
uncertainty, an overview PNG and a summary, and prints per-structure Dice and time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from SpineSegDiffLib.core.device_names import DEVICE_CHOICES

DEMO_PHANTOM_SEED = 20261125  # never used for training (training uses seed 1, scoring 1001)
DEMO_REAL_CASE = "IVD_20"  # held out of the demo model's training (odd position in its set)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--model", default="spinesegdiff-demo", help="model .zip or id (default: the bundled demo model)")
    p.add_argument("--samples", type=int, default=5, help="ensemble size (default 5)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--real-data", type=Path, default=None,
                   help="real-data folder with cases.csv (default: $SPINESEGDIFF_REAL_DATA; "
                        "scripts/demo.sh sets it to ../shared/data/real when that exists)")
    p.add_argument("--no-real", action="store_true", help="skip the real case")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.data import outputs
    from SpineSegDiffLib.data.imageio import write_image
    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.realdata import default_real_folder, read_real_folder
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic
    from SpineSegDiffLib.evaluation.metrics import headline_score, score_result
    from SpineSegDiffLib.evaluation.report import case_overview_png
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.model.registry import resolve_model

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    model = load_model(resolve_model(args.model), args.device)
    print(f"model {model.identity['id']} {model.identity['version']} on {model.device} "
          f"(loaded in {time.perf_counter() - t_load:.1f} s)")
    settings = SegmentSettings(samples=args.samples,
                               steps=model.default("steps", 10) if args.steps is None else args.steps)
    settings.validate()

    cases = []
    phantom = generate_case(seed=DEMO_PHANTOM_SEED, index=0, sequences=("t2",))
    reference = sitk.GetImageFromArray(spider_to_semantic(sitk.GetArrayFromImage(phantom.mask)))
    reference.CopyInformation(phantom.mask)
    write_image(phantom.images["t2"], out / "phantom_t2.nrrd")
    write_image(reference, out / "phantom_t2_reference.nii.gz")
    cases.append(("phantom_t2", phantom.images["t2"], reference, np.ones(3, bool), False))
    real_folder = args.real_data or default_real_folder()
    if not args.no_real and real_folder is not None and (real_folder / "cases.csv").is_file():
        for case in read_real_folder(real_folder):
            if case.case_id == DEMO_REAL_CASE:
                image, semantic = case.load()
                ann = np.array([k in case.annotated for k in ("spinal_canal", "vertebrae", "discs")])
                cases.append((f"real_{case.case_id}", image, semantic, ann, case.body_only))

    results = {}
    for name, image, ref, annotated, body_only in cases:
        t0 = time.perf_counter()
        res = segment_image(image, model, settings, input_name=name)
        outputs.write_segmentation(res.labelmap, out / f"{name}.seg.nrrd")
        outputs.write_float_image(res.uncertainty, out / f"{name}_uncertainty.nii.gz")
        case_overview_png(out / f"{name}_overview.png", image, ref, res, title=name)
        scores = score_result(res, sitk.GetArrayFromImage(ref), annotated, body_only)
        res.summary["scores"] = scores
        outputs.write_summary(res.summary, out / f"{name}_summary.json")
        seconds = time.perf_counter() - t0
        results[name] = {"scores": scores["structures"], "seconds": round(seconds, 2)}
        print(f"\n{name}: {image.GetSize()} voxels, {settings.samples} samples x {settings.steps} steps, "
              f"{seconds:.1f} s")
        for key, entry in res.summary["structures"].items():
            headline = headline_score(scores["structures"].get(key, {}))
            score = f"{headline[0]} {headline[1]:.3f}" if headline else "not labelled"
            print(f"  {entry['name']:<22} {score:<18} volume {entry['volume_ml']:7.1f} ml  "
                  f"mean uncertainty {entry['mean_uncertainty']:.3f}")
        print(f"  overview: {out / f'{name}_overview.png'}")
    outputs.write_summary(results, out / "demo_results.json")
    print(f"\nsegmentations (.seg.nrrd), uncertainty maps and summaries are in {out}/", file=sys.stdout)
    return 0
