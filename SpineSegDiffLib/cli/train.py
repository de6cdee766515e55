"""`spinesegdiff train`: train a model on SPIDER folders, retraining sets and/or the real-MRI folder."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from SpineSegDiffLib.core.device_names import DEVICE_CHOICES


_HELP = {
    "stage": "what trains: diffusion (the denoiser from noise); presegmenter (only the presegmentation "
             "head on the frozen image encoder, needs --init; the denoiser is kept as it is); "
             "diffusion-from-presegmentation (the denoiser from the presegmentation noised to "
             "t <= --preseg-t-max, needs --init with a presegmenter) ",
    "preseg_t_max": "presegmentation start: noise the presegmentation to this step of T; "
                    "recorded in model.json as the default of segment --t-max ",
    "preseg_steps": "presegmentation start: DDIM steps from t_max; recorded as the default --steps ",
    "vertebra_size_prior": "on vertebral-body-only cases, penalise predicted vertebra in the bodies' "
                           "span beyond this many times the case's mean body area per slice, where "
                           "the labels leave it open (posterior elements vs. muscle); 0 = off ",
    "size_prior_weight": "weight of that penalty in the loss ",
    "boundary_weight": "loss weight of the pixels on either side of a label border, a whole number "
                       "(1 = every pixel counts the same) ",
}


def configure_parser(p: argparse.ArgumentParser) -> None:
    from SpineSegDiffLib.training.config import TrainConfig

    d = TrainConfig()
    p.add_argument("data", type=Path, nargs="+",
                   help="training folders: SPIDER-format (images/, masks/), a retraining set (dataset.json) "
                        "or the real-MRI folder (cases.csv; partial labels)")
    p.add_argument("--out", type=Path, required=True, help="output folder: checkpoint.pt, model.zip, training.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    # --stage (from TrainConfig below): diffusion (default), presegmenter (only the
    # presegmentation head on the frozen encoder; needs --init), diffusion-from-presegmentation
    # (the paper's training from the noised presegmentation, t <= --preseg-t-max; needs --init
    # with a presegmenter)
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune: start from this model's weights (a model .zip or a registry id, e.g. "
                        "spinesegdiff-demo); its widths and grid are used unless given here; "
                        "--image-channels 3 widens a 2D model to 2.5D")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--progress", default="bar", choices=["bar", "json", "none"])
    p.add_argument("--limit-cases", type=int, default=None, help="use at most this many cases per folder (quick runs)")
    p.add_argument("--sequences", default=None, help="SPIDER sequences to use, e.g. t1,t2 (default: all)")
    p.add_argument("--config", type=Path, default=None, help="JSON file with any of the options below")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(getattr(d, f.name))
        if isinstance(getattr(d, f.name), bool):
            p.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                           metavar="BOOL", help=f"(default {getattr(d, f.name)})")
        else:
            p.add_argument(flag, type=float if f.name == "max_minutes" else kind, default=None,
                           help=_HELP.get(f.name, "") + f"(default {getattr(d, f.name)})")


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib.core.errors import InputError
    from SpineSegDiffLib.core.progress import make_progress
    from SpineSegDiffLib.training.data import data_summary, load_folder
    from SpineSegDiffLib.training.config import TrainConfig, config_from_values
    from SpineSegDiffLib.training.loop import train

    values = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{args.config}: cannot read the training config ({exc})") from None
        config_from_values(values, str(args.config))  # its own errors name the file
    names = {f.name for f in fields(TrainConfig)}
    for name in names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    init_state, init_name, init_metadata = None, None, None
    if args.init is not None:
        init_state, init_name, inherited, init_metadata = _init_model(args.init)
        values = {**inherited, **values}  # what the user gave wins
    cfg = config_from_values(values)
    spec = cfg.grid_spec()
    sequences = tuple(args.sequences.split(",")) if args.sequences else None
    cases = []
    for folder in args.data:
        print(f"reading {folder} ...", file=sys.stderr)
        cases += load_folder(folder, spec, sequences=sequences, limit=args.limit_cases)
    summary = data_summary(cases)
    summary["folders"] = [str(f) for f in args.data]
    if init_name is not None:
        summary["initialised_from"] = init_name
    print(f"{summary['cases']} cases, {summary['patients']} patients, {summary['slices']} slices", file=sys.stderr)
    progress = make_progress(args.progress)
    try:
        result = train(cases, cfg, args.out, device=args.device, resume=args.resume,
                       progress=lambda stage, f, msg="", **kw: progress.update(stage, f, msg, **kw),
                       data_summary=summary, log=lambda m: print(m, file=sys.stderr), init_state=init_state,
                       init_metadata=init_metadata)
    finally:
        progress.close()
    print(f"model written to {result.model_path} ({result.seconds / 60:.1f} min)")
    return 0


def _init_model(name: str) -> tuple[dict, str, dict, dict]:
    """(weights, "id version", TrainConfig values, model.json) of the model to start from."""
    from SpineSegDiffLib.model.modelfile import load_model_file
    from SpineSegDiffLib.model.registry import resolve_model

    mf = load_model_file(resolve_model(name))
    arch, grid = mf.metadata["architecture"], mf.metadata["preprocessing"]["grid"]
    inherited = {"features": ",".join(str(w) for w in arch["features"]),
                 "image_channels": int(arch.get("image_channels", 1)),
                 "grid_spacing_mm": float(grid["spacing_mm"]), "grid_size": int(grid["size"]),
                 "min_slice_spacing_mm": float(grid["min_slice_spacing_mm"])}
    preseg = mf.metadata.get("presegmentation") or {}
    inherited.update({f"preseg_{k}": int(preseg[k]) for k in ("t_max", "steps") if k in preseg})
    return mf.state_dict, f"{mf.metadata.get('id')} {mf.metadata.get('version')}", inherited, mf.metadata
