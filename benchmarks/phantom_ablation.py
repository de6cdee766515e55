#!/usr/bin/env python
"""Old vs new phantoms at the same budget, scored on real cases the demo model never saw.

One variant per run (so the two can run one after the other in the background):
    .venv/bin/python benchmarks/phantom_ablation.py --variant old --minutes 8 --out /tmp/abl_old.json
    .venv/bin/python benchmarks/phantom_ablation.py --variant new --minutes 8 --out /tmp/abl_new.json
    .venv/bin/python benchmarks/phantom_ablation.py --variant none --out /tmp/abl_none.json   # bundled model as is
    .venv/bin/python benchmarks/phantom_ablation.py --merge /tmp/abl_*.json \
        --out benchmarks/results/phantom_ablation-cpu-2026-12-02.json

A variant fine-tunes the bundled demo model for --minutes on phantom patients only (no
real data): "old" draws them with the generator of commit 13380df (the flat
``data/phantom.py`` before the anatomy rewrite, read from git into a temporary module),
"new" with today's ``SpineSegDiffLib.data.phantom``. Both then segment the real
development cases at odd positions of each set in cases.csv (those the demo model did not
train on) and are scored with ``evaluation.metrics.score_result``, plus two measures of
painting muscle as bone that need the body labels only: the "vertebra" volume inside the
labelled bodies' superior-inferior span divided by the body volume (about 1.5-2.5 for a
whole vertebra), and the Dice of "vertebra" against the bodies inside the union of each
body's bounding box grown by 2 voxels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from old_phantom import old_phantom_module as old_generator  # noqa: E402

# "--sequences mix": two contrasts per patient as before, cycling through these pairs, so
# the new generator's STIR, Dixon and random contrasts are seen at the same volume count
MIX = (("t1", "t2"), ("t2", "random"), ("t1", "stir"), ("dixon_water", "random"))
DEMO_MODEL = BUNDLED_DEMO_MODEL


def phantom_cases(variant: str, seed: int, count: int, sequences: tuple[str, ...], spec):
    import SimpleITK as sitk

    from SpineSegDiffLib.data.spider import spider_to_semantic
    from SpineSegDiffLib.training.data import _grid_case

    if variant == "old":
        generate = old_generator().generate_case
    else:
        from SpineSegDiffLib.data.phantom import generate_case as generate
    out = []
    for i in range(count):
        case = generate(seed, i, MIX[i % len(MIX)] if sequences == ("mix",) else sequences)
        semantic = sitk.GetImageFromArray(spider_to_semantic(sitk.GetArrayFromImage(case.mask)))
        semantic.CopyInformation(case.mask)
        for seq, image in case.images.items():
            out.append(_grid_case(f"{variant}{seed}_{i}_{seq}", f"{variant}{seed}_{i}", "phantom", image,
                                  semantic, np.ones(3, dtype=bool), spec))
    return out


def body_measures(vertebra: np.ndarray, reference: np.ndarray) -> dict:
    """Volume ratio in the bodies' span and Dice inside the bodies' grown boxes (z, y, x arrays)."""
    from scipy import ndimage

    body = reference == 2
    if not body.any():
        return {}
    rows = np.nonzero(body.any(axis=(1, 2)))[0]
    span = slice(rows.min(), rows.max() + 1)
    ratio = float(vertebra[span].sum() / body.sum())
    instances, _ = ndimage.label(body)
    boxes = np.zeros(body.shape, bool)
    for sl in ndimage.find_objects(instances):
        grown = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in sl)
        boxes[grown] = True
    p, r = vertebra & boxes, body & boxes
    dice = float(2 * (p & r).sum() / max(1, p.sum() + r.sum()))
    return {"vertebra_volume_ratio_in_body_span": round(ratio, 4), "body_box_dice": round(dice, 4)}


def score(model_path: Path, samples: int, steps: int, real_dir: Path, device: str,
          limit: int | None = None) -> list[dict]:
    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder, split_train_held_out
    from SpineSegDiffLib.evaluation.metrics import score_result
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(model_path, device)
    settings = SegmentSettings(samples=samples, steps=steps)
    scored = []
    for case in split_train_held_out(read_real_folder(real_dir))[1]:  # the demo model never trained on these
        if limit is not None and len(scored) >= limit:
            break
        image, semantic = case.load()
        ref = sitk.GetArrayFromImage(semantic)
        ann = np.array([k in case.annotated for k in ("spinal_canal", "vertebrae", "discs")])
        t0 = time.perf_counter()
        res = segment_image(image, model, settings)
        scores = score_result(res, ref, ann, case.body_only)
        if case.body_only:
            scores["structures"]["vertebrae"].update(body_measures(res.masks[1].astype(bool), ref))
        scored.append({"case": case.case_id, "set": f"real:{case.set}", "scores": scores,
                       "seconds": round(time.perf_counter() - t0, 1)})
        print(case.case_id, json.dumps(scores["structures"]), flush=True)
    return scored


def summarise(scored: list[dict]) -> dict:
    from SpineSegDiffLib.evaluation.metrics import aggregate

    out = aggregate(scored)
    for name, group in out.items():  # the two body measures are not in aggregate()
        items = [c for c in scored if c["set"] == name]
        for key in ("vertebra_volume_ratio_in_body_span", "body_box_dice"):
            vals = [c["scores"]["structures"].get("vertebrae", {}).get(key) for c in items]
            vals = [v for v in vals if v is not None]
            if vals:
                group["structures"]["vertebrae"][key] = round(float(np.mean(vals)), 4)
                if key.startswith("vertebra_volume"):
                    group["structures"]["vertebrae"][key + "_range"] = [round(min(vals), 3), round(max(vals), 3)]
    return out


def record_from_log(path: Path) -> dict:
    """A variant's record from its log (``old.log``): the per-case lines printed while scoring,
    for a run still scoring when the results had to be written (marked ``partial``)."""
    scored = []
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("{") and name[:3] in ("VB1", "VB2", "VB3", "IVD"):
            scored.append({"case": name, "set": f"real:{name.split('_')[0]}",
                           "scores": {"structures": json.loads(rest)}})
    epochs = sum(1 for line in path.read_text().splitlines() if line.startswith("epoch "))
    return {"variant": path.stem, "partial": True, "epochs": epochs, "cases": scored,
            "summary": summarise(scored)}


def run_variant(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    record: dict = {"variant": args.variant, "samples": args.samples, "steps": args.steps,
                    "host": platform.node(), "threads": args.threads}
    model_path = DEMO_MODEL
    if args.variant != "none":
        from SpineSegDiffLib.model.modelfile import load_model_file
        from SpineSegDiffLib.training.config import TrainConfig
        from SpineSegDiffLib.training.loop import train

        # a fixed number of epochs makes the budget equal whatever else the machine runs
        epochs, minutes = (args.epochs, None) if args.epochs else (10000, args.minutes)
        cfg = TrainConfig(features="small", image_channels=3, epochs=epochs, batch_size=args.batch_size,
                          lr=args.lr, max_minutes=minutes, seed=args.seed, val_every=10000,
                          val_fraction=0.1, calibrate=False, model_id="ablation")
        t0 = time.perf_counter()
        sequences = tuple(args.sequences.split(","))
        cases = phantom_cases(args.variant, args.phantom_seed, args.phantoms, sequences, cfg.grid_spec())
        record["phantom_volumes"] = len(cases)
        record["phantom_sequences"] = list(sequences)
        record["phantom_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{len(cases)} {args.variant} phantom volumes in {record['phantom_seconds']} s", flush=True)
        work = Path(tempfile.mkdtemp(prefix=f"ablation_{args.variant}_"))
        result = train(cases, cfg, work, device=args.device, log=lambda m: print(m, flush=True),
                       init_state=load_model_file(DEMO_MODEL).state_dict)
        record["training_minutes"] = round(result.seconds / 60, 2)
        record["epochs"] = len(result.history)
        model_path = result.model_path
    scored = score(model_path, args.samples, args.steps, args.real, args.device, args.limit)
    record["cases"] = scored
    record["summary"] = summarise(scored)
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("old", "new", "none"))
    p.add_argument("--merge", nargs="+", type=Path, help="merge per-variant JSON files into --out")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=8.0, help="training budget in wall time")
    p.add_argument("--epochs", type=int, default=0, help="training budget in epochs (instead of --minutes)")
    p.add_argument("--phantoms", type=int, default=16, help="phantom patients")
    p.add_argument("--phantom-seed", type=int, default=7)
    p.add_argument("--sequences", default="t1,t2", help="contrasts per phantom patient, or 'mix' (see MIX)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None, help="score at most this many real cases (smoke runs)")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    args = p.parse_args()
    if args.merge:
        records = [json.loads(f.read_text()) if f.suffix == ".json" else record_from_log(f) for f in args.merge]
        merged = {"command": "benchmarks/phantom_ablation.py (see benchmarks/README.md)",
                  "variants": {r["variant"]: {k: v for k, v in r.items() if k != "cases"} for r in records},
                  "per_case": {r["variant"]: [{"case": c["case"], "set": c["set"],
                                               "vertebrae": c["scores"]["structures"].get("vertebrae"),
                                               "discs": c["scores"]["structures"].get("discs")}
                                              for c in r["cases"]] for r in records}}
        args.out.write_text(json.dumps(merged, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.variant is None:
        p.error("--variant or --merge is required")
    record = run_variant(args)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
