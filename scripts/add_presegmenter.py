#!/usr/bin/env python
"""Add a presegmenter to a trained model file: train only the presegmentation head on the
model's frozen image encoder, on the demo model's data (the phantoms of
scripts/train_demo_model.py + the real cases at even positions of each set in cases.csv;
odd positions stay held out), and write a new model file with `presegmentation` in its
model.json. The denoiser's weights are copied unchanged.

    .venv/bin/python scripts/add_presegmenter.py SpineSegDiffLib/resources/models/spinesegdiff-demo.zip \\
        --out out/demo-with-presegmenter.zip --minutes 10

The same as `spinesegdiff train DATA --stage presegmenter --init MODEL.zip --out DIR`,
with the demo model's data. --resume continues an interrupted run (same arguments).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model file (.zip) to add a presegmenter to")
    p.add_argument("--out", type=Path, required=True, help="new model file (.zip)")
    p.add_argument("--work", type=Path, default=None, help="checkpoint folder (default: OUT's name + '.work')")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall time")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    p.add_argument("--no-real", action="store_true", help="phantoms only")
    p.add_argument("--phantoms", type=int, default=60, help="phantom patients (as train_demo_model.py)")
    p.add_argument("--phantom-seed", type=int, default=1, help="seed of the phantoms (train_demo_model's --seed)")
    p.add_argument("--t-max", type=int, default=400, help="default t_max recorded in model.json")
    p.add_argument("--steps", type=int, default=5, help="default DDIM steps from t_max recorded in model.json")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    from train_demo_model import make_phantoms, split_real

    from SpineSegDiffLib.model.modelfile import load_model_file
    from SpineSegDiffLib.training.config import TrainConfig
    from SpineSegDiffLib.training.data import data_summary, load_folder
    from SpineSegDiffLib.training.loop import train

    mf = load_model_file(args.model)
    arch, grid = mf.metadata["architecture"], mf.metadata["preprocessing"]["grid"]
    cfg = TrainConfig(features=",".join(str(w) for w in arch["features"]),
                      image_channels=int(arch.get("image_channels", 1)),
                      grid_spacing_mm=float(grid["spacing_mm"]), grid_size=int(grid["size"]),
                      min_slice_spacing_mm=float(grid["min_slice_spacing_mm"]),
                      stage="presegmenter", preseg_t_max=args.t_max, preseg_steps=args.steps,
                      epochs=1000, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                      val_fraction=0.1, val_every=1, calibrate=False,
                      model_id=mf.metadata["id"], model_version=mf.metadata["version"])
    t0 = time.time()
    cases = make_phantoms(args.phantom_seed, args.phantoms, cfg.grid_spec(), args.workers)
    print(f"{len(cases)} phantom volumes on the grid in {time.time() - t0:.0f} s", flush=True)
    real_train, real_held = [], []
    if not args.no_real and (args.real / "cases.csv").is_file():
        real_train, real_held = split_real(load_folder(args.real, cfg.grid_spec()))
    summary = data_summary(cases + real_train)
    summary.update(phantom_seed=args.phantom_seed, real_training_cases=[c.case_id for c in real_train],
                   real_held_out_cases=[c.case_id for c in real_held])
    work = args.work or args.out.with_name(args.out.name + ".work")
    result = train(cases + real_train, cfg, work, device=args.device, resume=args.resume,
                   data_summary=summary, log=lambda m: print(m, flush=True),
                   init_state=mf.state_dict, init_metadata=mf.metadata)
    from SpineSegDiffLib.core.atomic import atomic_path

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:  # never a half-written model file
        tmp.write_bytes(result.model_path.read_bytes())
    print(f"presegmenter trained in {result.seconds / 60:.1f} min; model written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
