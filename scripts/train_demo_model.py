#!/usr/bin/env python
"""Reproduce the bundled demo model: phantoms (+ part of the real-MRI folder), train,
score on phantoms it never saw and on the real cases it did not train on, write
`SpineSegDiffLib/resources/models/spinesegdiff-demo.zip` with all of that in its `model.json`.

    .venv/bin/python scripts/train_demo_model.py --minutes 30          # CPU, this machine
    python scripts/train_demo_model.py --minutes 5 --device cuda     # one GPU

Real cases: those at even positions of each set in cases.csv train, odd ones are
scored, so every set is reported on cases the model never saw.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402

import numpy as np  # noqa: E402


def phantom_grid_cases(args_tuple):
    """Worker: one phantom patient (t1 + t2) onto the model grid."""
    seed, index, spec_dict, generator = args_tuple
    import SimpleITK as sitk

    from SpineSegDiffLib.grid.geometry import GridSpec

    if generator == "old":  # the generator before issue 11's anatomy, for the old-vs-new ablation
        generate_case = _old_generator().generate_case
    else:
        from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic
    from SpineSegDiffLib.training.data import _grid_case

    spec = GridSpec(**spec_dict)
    case = generate_case(seed=seed, index=index)
    semantic = sitk.GetImageFromArray(spider_to_semantic(sitk.GetArrayFromImage(case.mask)))
    semantic.CopyInformation(case.mask)
    out = []
    for seq, image in case.images.items():
        out.append(_grid_case(f"phantom{seed}_{index}_{seq}", f"phantom{seed}_{index}", "phantom",
                              image, semantic, np.ones(3, dtype=bool), spec))
    return out


@functools.cache
def _old_generator():
    """scripts/old_phantom.py's module, loaded once per process (it registers itself as
    ``old_phantom`` in sys.modules, shadowing the loader's own name)."""
    import old_phantom

    return old_phantom.old_phantom_module()


def make_phantoms(seed: int, count: int, spec, workers: int, generator: str = "new"):
    from dataclasses import asdict

    jobs = [(seed, i, asdict(spec), generator) for i in range(count)]
    cases = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(phantom_grid_cases, jobs, chunksize=2):
            cases += part
    return cases


def split_real(cases):
    """(training, held out) of grid cases, split as ``realdata.split_train_held_out``."""
    from SpineSegDiffLib.data.realdata import split_train_held_out

    return split_train_held_out(cases, set_of=lambda case: case.source)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path,
                   default=BUNDLED_DEMO_MODEL)
    p.add_argument("--work", type=Path, default=REPO / "out" / "demo-training")
    p.add_argument("--phantoms", type=int, default=60, help="phantom patients for training (+ validation)")
    p.add_argument("--test-phantoms", type=int, default=6, help="unseen phantom patients scored at the end")
    p.add_argument("--seed", type=int, default=1,
                   help="training seed; unseen test phantoms use seed+1000, calibration phantoms seed+2000")
    p.add_argument("--phantom-seed", type=int, default=None,
                   help="seed of the training phantoms (default: --seed); another one adds new patients "
                        "when fine-tuning while the test phantoms stay the same")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--real-cache", type=Path, default=None, help="grid cache (.npz) of the real folder")
    p.add_argument("--real-train-cache", type=Path, default=None,
                   help="grid cache (.npz) holding only the real cases to train on (all of them are used)")
    p.add_argument("--no-real", action="store_true", help="train on phantoms only")
    p.add_argument("--real-repeat", type=int, default=1,
                   help="each real training case is seen this many times per epoch (the real slices are "
                        "otherwise a small share next to the phantoms)")
    p.add_argument("--calibrate-only", type=Path, default=None,
                   help="skip training: fit the logit calibration of this model file on fresh phantoms, then score it")
    p.add_argument("--score-only", type=Path, default=None,
                   help="skip training: score this model file and write it with the scores to --out")
    p.add_argument("--init", type=Path, default=None, help="fine-tune: start from this model file's weights")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the checkpoint in --work (same arguments)")
    p.add_argument("--model-version", default="1.1.0", help="version written into model.json")
    p.add_argument("--features", default="small")
    p.add_argument("--image-channels", type=int, default=3, help="3 = 2.5D (default), 1 = 2D")
    p.add_argument("--grid-spacing-mm", type=float, default=2.0,
                   help="in-plane pixel spacing of the model grid (a larger field of view widens it to fit)")
    p.add_argument("--grid-size", type=int, default=160,
                   help="in-plane size of the model grid in pixels, a multiple of 16")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--minutes", type=float, default=30.0, help="stop training after this wall time")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--phantom-generator", choices=("new", "old"), default="new",
                   help="training phantoms from today's generator (muscles, organs, random contrasts) or "
                        "from the one before it (old-vs-new ablation); test phantoms are always new")
    p.add_argument("--vertebra-size-prior", type=float, default=0.0,
                   help="vertebra size prior on the real body-only cases (training/size_prior.py); 0 = off")
    p.add_argument("--size-prior-weight", type=float, default=0.3)
    p.add_argument("--boundary-weight", type=int, default=1,
                   help="loss weight of the pixels on either side of a label border (training/boundary.py); 1 = off")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--eval-samples", type=int, default=5)
    p.add_argument("--eval-steps", type=int, default=10)
    args = p.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    from SpineSegDiffLib.training.config import TrainConfig

    from SpineSegDiffLib.training.loop import train
    from SpineSegDiffLib.training.data import data_summary, load_folder, load_grid_cases

    cfg = TrainConfig(features=args.features, image_channels=args.image_channels, epochs=args.epochs,
                      grid_spacing_mm=args.grid_spacing_mm, grid_size=args.grid_size,
                      batch_size=args.batch_size, lr=args.lr, max_minutes=args.minutes, seed=args.seed,
                      val_every=max(1, args.epochs // 20), model_id="spinesegdiff-demo",
                      model_version=args.model_version, val_fraction=0.1,
                      vertebra_size_prior=args.vertebra_size_prior, size_prior_weight=args.size_prior_weight,
                      boundary_weight=args.boundary_weight)
    try:
        spec = cfg.grid_spec()
    except ValueError as error:
        p.error(str(error))
    if args.calibrate_only is not None:
        return calibrate_model_file(args.calibrate_only, args, cfg)
    if args.score_only is not None:
        return rescore(args.score_only, args)
    t0 = time.time()
    phantom_seed = args.seed if args.phantom_seed is None else args.phantom_seed
    if phantom_seed in (args.seed + 1000, args.seed + 2000):
        p.error(f"--phantom-seed {phantom_seed} is the seed of the test or calibration phantoms")
    phantoms = make_phantoms(phantom_seed, args.phantoms, spec, args.workers, args.phantom_generator)
    print(f"{len(phantoms)} phantom volumes on the grid in {time.time() - t0:.0f} s", flush=True)
    real_train, real_held = [], []
    if not args.no_real:
        if args.real_train_cache is not None:
            real_train = load_grid_cases(args.real_train_cache)
        else:
            real = load_grid_cases(args.real_cache) if args.real_cache is not None else load_folder(args.real, spec)
            real_train, real_held = split_real(real)
    if args.real_repeat < 1:
        p.error("--real-repeat must be 1 or more")
    cases = phantoms + [replace(c, case_id=f"{c.case_id}#{k}" if k else c.case_id)
                        for c in real_train for k in range(args.real_repeat)]
    summary = data_summary(cases)
    summary["phantom_seed"] = phantom_seed
    summary["phantom_generator"] = args.phantom_generator
    summary["real_training_cases"] = [c.case_id for c in real_train]
    summary["real_repeat"] = args.real_repeat
    summary["real_held_out_cases"] = [c.case_id for c in real_held]
    init_state = None
    if args.init is not None:
        from SpineSegDiffLib.model.modelfile import load_model_file

        init_state = load_model_file(args.init).state_dict
        summary["initialised_from"] = str(args.init.name)
    result = train(cases, cfg, args.work, device=args.device, data_summary=summary, resume=args.resume,
                   log=lambda m: print(m, flush=True), init_state=init_state)
    print(f"trained in {result.seconds / 60:.1f} min", flush=True)

    # with a training cache the held-out cases are those of the real folder not in it
    return rescore(result.model_path, args, None if args.real_train_cache is not None else real_held)


def rescore(model_path: Path, args, real_held=None) -> int:
    """Score a trained model and write it, with its scores in model.json, to --out."""
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model

    mf = load_model_file(model_path)
    if real_held is None:  # the cases the model did not train on, from its own record
        trained = set(mf.metadata["training"]["data"].get("real_training_cases", []))
        real_held = [c for c in _real_cases(args.real) if c.case_id not in trained]
    metrics = score_model(model_path, args, real_held)
    meta = dict(mf.metadata)
    meta["metrics"] = {**meta.get("metrics", {}), **metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(args.out, mf.state_dict, meta)
    print(json.dumps(metrics, indent=2))
    print(f"model written to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def calibrate_model_file(path: Path, args, cfg) -> int:
    """Fit the logit calibration on phantoms of a seed used neither for training nor scoring."""
    import torch

    from SpineSegDiffLib.model.calibration import calibrate
    from SpineSegDiffLib.model.devices import choose_device
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig
    from SpineSegDiffLib.training.targets import SliceSet
    from SpineSegDiffLib.training.data import one_hot

    mf = load_model_file(path)
    meta = dict(mf.metadata)
    net = DiffUNet(NetworkConfig.from_dict(meta["architecture"]))
    state = dict(mf.state_dict)
    state.setdefault("logit_scale", torch.ones(3))  # files written before calibration existed
    state.setdefault("logit_bias", torch.zeros(3))
    net.load_state_dict(state)
    dev, _ = choose_device(args.device)
    net.to(dev)
    from SpineSegDiffLib.grid.geometry import GridSpec

    spec = GridSpec(**meta["preprocessing"]["grid"])
    seed = args.seed + 2000
    cases = make_phantoms(seed, 8, spec, args.workers)
    val = SliceSet.from_cases(cases, int(meta["architecture"].get("image_channels", 1)), spec.spacing_mm)
    diff = DiffusionConfig.from_dict(meta["diffusion"])
    record = calibrate(net, val.inputs, one_hot(val.labels), val.weights, diff, dev,
                       diff.sampling_steps, diff.fused_steps)
    record["data"] = f"8 phantom patients (t1+t2), seed {seed}"
    meta["calibration"] = record
    print(json.dumps(record, indent=2), flush=True)
    tmp = args.work / "calibrated.zip"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    save_model(tmp, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, meta)
    return rescore(tmp, args)


def _real_cases(folder: Path):
    from SpineSegDiffLib.data.realdata import read_real_folder

    return read_real_folder(folder) if (folder / "cases.csv").is_file() else []


def score_model(model_path: Path, args, real_held) -> dict:
    """Dice on unseen phantoms (full volumes, input geometry) and on held-out real cases."""
    import SimpleITK as sitk

    from SpineSegDiffLib.evaluation.metrics import aggregate, score_result
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings
    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.realdata import read_real_folder
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic

    model = load_model(model_path, args.device)
    settings = SegmentSettings(samples=args.eval_samples, steps=args.eval_steps)
    scored = []

    def run(case_id, set_name, image, ref, annotated, body_only):
        res = segment_image(image, model, settings)
        scores = score_result(res, ref, annotated, body_only)
        scored.append({"case": case_id, "set": set_name, "scores": scores,
                       "seconds": res.summary["timings"]["total_s"]})
        print(case_id, json.dumps(scores["structures"]), flush=True)

    test_seed = args.seed + 1000  # never used for training
    for i in range(args.test_phantoms):
        case = generate_case(seed=test_seed, index=i)
        ref = spider_to_semantic(sitk.GetArrayFromImage(case.mask))
        for seq, image in case.images.items():
            run(f"phantom{test_seed}_{i}_{seq}", "phantom", image, ref, np.ones(3, bool), False)
    held_ids = {c.case_id for c in real_held}
    if held_ids and args.real.is_dir():
        for case in read_real_folder(args.real):
            if case.case_id in held_ids:
                image, semantic = case.load()
                ann = np.array([k in case.annotated for k in ("spinal_canal", "vertebrae", "discs")])
                run(case.case_id, f"real:{case.set}", image, sitk.GetArrayFromImage(semantic), ann, case.body_only)
    return {"evaluation": aggregate(scored), "evaluation_settings": {"samples": args.eval_samples,
                                                                     "steps": args.eval_steps},
            "evaluated_cases": [c["case"] for c in scored]}


if __name__ == "__main__":
    raise SystemExit(main())
