"""`spinesegdiff segment`: one volume, or a folder of volumes in batch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from SpineSegDiffLib.core.device_names import DEVICE_CHOICES
from SpineSegDiffLib.core.errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="3-D MRI (.mha .nii .nii.gz .nrrd), or a folder of them for batch use")
    p.add_argument("--model", default="spinesegdiff-demo",
                   help="model .zip, or a model id from Resources/Models.json (default: the bundled demo model)")
    p.add_argument("--samples", type=int, default=None,
                   help="ensemble size S: more samples, better uncertainty, longer run (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps K per sample (default: the model's)")
    p.add_argument("--fused-steps", type=int, default=None, help="how many of the last steps are fused (default: the model's)")
    p.add_argument("--start", choices=["noise", "presegmentation"], default=None,
                   help="where sampling starts: pure noise, or the model's presegmentation noised to --t-max "
                        "(fewer steps; needs a model with a presegmenter). Default: the model's "
                        "(presegmentation when it has a presegmenter)")
    p.add_argument("--t-max", type=int, default=None,
                   help="--start presegmentation: noise the presegmentation to this step of the "
                        "1000-step schedule, then run --steps steps down (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the starting noise (same seed, same result)")
    p.add_argument("--output-segmentation", type=Path, help="segmentation file: .seg.nrrd (Slicer segmentation) or a labelmap .nii.gz/.nii/.nrrd/.mha (1 canal, 2 vertebrae, 3 discs)")
    p.add_argument("--output-presegmentation", type=Path,
                   help="the presegmentation (labelmap or .seg.nrrd, as --output-segmentation), written as soon "
                        "as it exists, before the ensemble (--progress json reports it as stage "
                        "'presegmentation' with its 'path'); needs a model with a presegmenter")
    p.add_argument("--output-uncertainty", type=Path, help="combined uncertainty map (float, 0 sure .. 1 unsure)")
    p.add_argument("--output-structure-uncertainty", type=Path, help="per-structure uncertainty, 3 components (canal, vertebrae, discs)")
    p.add_argument("--output-probabilities", type=Path, help="per-structure fused probabilities, 3 components")
    p.add_argument("--output-extras", type=Path, help="sample variance and mutual information: writes NAME_variance and NAME_mutual_information (3 components each)")
    p.add_argument("--output-summary", type=Path, help="JSON summary: volumes, mean uncertainty, timings, settings")
    p.add_argument("--output-dir", type=Path, help="batch mode (IMAGE is a folder): one set of outputs per image here; finished cases are skipped")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where the network runs")
    p.add_argument("--batch-slices", type=int, default=None, help="slices per network batch (default: from free memory)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or keep drawn samples in the per-user sample cache "
                        "(by default changing only --samples reuses the samples already drawn)")
    p.add_argument("--progress", default="bar", choices=["bar", "json", "none"], help="progress display: bar on stderr, JSON lines on stdout, or none")


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib.core.progress import make_progress

    progress = make_progress(args.progress)
    try:
        if args.image.is_dir():
            return _run_folder(args, progress)
        if all(v is None for v in (args.output_segmentation, args.output_uncertainty, args.output_summary,
                                   args.output_presegmentation)):
            raise InputError("nothing to write: give --output-segmentation and/or --output-uncertainty "
                             "(and optionally --output-summary)")
        summary = segment_file(args, args.image, _outputs_from_args(args), progress, 0.0, 1.0)
        progress.done(summary=str(args.output_summary) if args.output_summary else None)
        if args.progress != "json":
            _print_summary(summary)
        return 0
    finally:
        progress.close()


def _outputs_from_args(args) -> dict[str, Path | None]:
    return {"segmentation": args.output_segmentation, "presegmentation": args.output_presegmentation,
            "uncertainty": args.output_uncertainty,
            "structure_uncertainty": args.output_structure_uncertainty,
            "probabilities": args.output_probabilities, "extras": args.output_extras,
            "summary": args.output_summary}


def _load_model(args):
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.model.registry import resolve_model

    if not hasattr(args, "_loaded_model"):
        args._loaded_model = load_model(resolve_model(args.model), args.device)
    return args._loaded_model


def segment_file(args, image_path: Path, outputs: dict[str, Path | None], progress, start: float, end: float) -> dict:
    from SpineSegDiffLib.core.progress import SubProgress
    from SpineSegDiffLib.data import outputs as out
    from SpineSegDiffLib.data.imageio import read_mri
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.presegmentation import default_start, default_steps, model_presegmentation
    from SpineSegDiffLib.inference.settings import SegmentSettings

    out.check_output_paths(list(outputs.values()))
    for key in ("segmentation", "presegmentation"):
        if outputs.get(key) is not None:
            out.segmentation_format(outputs[key])
    sub = SubProgress(progress, "load", start, end)
    sub(0.0, f"reading {image_path.name}")
    image = read_mri(image_path)
    model = _load_model(args)
    start_kind = args.start or default_start(model)
    settings = SegmentSettings(samples=args.samples or model.default("samples", 5),
                               steps=args.steps or default_steps(model, start_kind),
                               fused_steps=args.fused_steps, seed=args.seed,
                               batch_slices=args.batch_slices,
                               extras=outputs.get("extras") is not None,
                               cache=not args.no_cache, start=start_kind, t_max=args.t_max)
    report = lambda stage, f, msg="", **kw: progress.update(stage, start + (end - start) * f, msg, **kw)  # noqa: E731
    on_presegmentation = None
    if outputs.get("presegmentation") is not None:
        if model_presegmentation(model) is None:
            raise InputError(f"--output-presegmentation: the model {model.identity.get('id')} has no "
                             "presegmenter; leave the option out or use a model with one")

        def on_presegmentation(labelmap) -> None:
            out.write_segmentation(labelmap, outputs["presegmentation"])
            report("presegmentation", 0.04, "presegmentation written", path=str(outputs["presegmentation"]))

    result = segment_image(image, model, settings, report, input_name=str(image_path),
                           on_presegmentation=on_presegmentation)
    t0 = time.perf_counter()
    progress.update("write", start + (end - start) * 0.97, "writing outputs")
    if outputs["segmentation"] is not None:
        out.write_segmentation(result.labelmap, outputs["segmentation"])
    if outputs["uncertainty"] is not None:
        out.write_float_image(result.uncertainty, outputs["uncertainty"])
    if outputs.get("structure_uncertainty") is not None:
        out.write_stack(result.structure_uncertainty, outputs["structure_uncertainty"])
    if outputs.get("probabilities") is not None:
        out.write_stack(result.probabilities, outputs["probabilities"])
    if outputs.get("extras") is not None:
        base = str(outputs["extras"])
        for name, images in result.extras.items():
            out.write_stack(images, _with_suffix(base, f"_{name}"))
    result.summary["timings"]["write_s"] = round(time.perf_counter() - t0, 3)
    result.summary["outputs"] = {k: str(v) for k, v in outputs.items() if v is not None}
    if outputs["summary"] is not None:
        out.write_summary(result.summary, outputs["summary"])  # last: marks the case finished
    return result.summary


def _with_suffix(base: str, suffix: str) -> Path:
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if base.endswith(ext):
            return Path(base[: -len(ext)] + suffix + ext)
    return Path(base + suffix + ".nii.gz")


def _case_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _run_folder(args, progress) -> int:
    from SpineSegDiffLib.data.imageio import SUPPORTED_EXTENSIONS

    if args.output_dir is None:
        raise InputError(f"{args.image} is a folder: give --output-dir for batch segmentation")
    images = sorted(p for p in args.image.iterdir()
                    if p.is_file() and any(p.name.lower().endswith(e) for e in SUPPORTED_EXTENSIONS))
    if not images:
        raise InputError(f"{args.image}: no images found (looked for {', '.join(SUPPORTED_EXTENSIONS)})")
    failed = []
    for i, path in enumerate(images):
        case = _case_name(path)
        outputs = {"segmentation": args.output_dir / f"{case}.seg.nrrd", "presegmentation": None,
                   "uncertainty": args.output_dir / f"{case}_uncertainty.nii.gz",
                   "structure_uncertainty": None, "probabilities": None, "extras": None,
                   "summary": args.output_dir / f"{case}_summary.json"}
        if outputs["summary"].exists():  # written last, so the case is complete: resume after it
            progress.update("load", (i + 1) / len(images), f"{case}: already done, skipped")
            continue
        try:
            segment_file(args, path, outputs, progress, i / len(images), (i + 1) / len(images))
        except InputError as exc:  # one bad file must not stop a batch
            failed.append(f"{path.name}: {exc}")
            print(f"error: {exc}", file=sys.stderr)
    progress.done()
    if failed:
        print(f"error: {len(failed)} of {len(images)} images failed; the others are in {args.output_dir}",
              file=sys.stderr)
        return 2
    return 0


def _print_summary(summary: dict) -> None:
    s = summary["settings"]
    print(f"segmented {summary['input']} with {s['samples']} samples x {s['steps']} steps "
          f"on {s['device']} in {summary['timings']['total_s']:.1f} s")
    cache = summary.get("cache", {})
    if cache.get("samples_from_cache"):
        print(f"  {cache['samples_from_cache']} sample(s) reused from the sample cache, "
              f"{cache['samples_computed']} computed")
    for key, entry in summary["structures"].items():
        print(f"  {entry['name']:<22} {entry['volume_ml']:8.1f} ml   mean uncertainty {entry['mean_uncertainty']:.3f}")
    for note in summary.get("notes", []):
        print(f"  note: {note}")
