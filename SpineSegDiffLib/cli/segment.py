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
    p.add_argument("--seed", type=int, default=0, help="random seed of the starting noise (same seed, same result)")
    p.add_argument("--output-segmentation", type=Path, help="segmentation file: .seg.nrrd (Slicer segmentation) or a labelmap .nii.gz/.nii/.nrrd/.mha (1 canal, 2 vertebrae, 3 discs)")
    p.add_argument("--output-uncertainty", type=Path, help="combined uncertainty map (float, 0 sure .. 1 unsure)")
    p.add_argument("--output-structure-uncertainty", type=Path, help="per-structure uncertainty, 3 components (canal, vertebrae, discs)")
    p.add_argument("--output-probabilities", type=Path, help="per-structure fused probabilities, 3 components")
    p.add_argument("--output-extras", type=Path, help="sample variance and mutual information: writes NAME_variance and NAME_mutual_information (3 components each)")
    p.add_argument("--output-summary", type=Path, help="JSON summary: volumes, mean uncertainty, timings, settings")
    p.add_argument("--output-instances", type=Path, help="level labels (.nii.gz/.nii/.nrrd/.mha), SPIDER values: 1 = S1, 2 = L5 ... 6 = L1, 7 = T12, 100 + n vertebra cut by the field of view, 201 = L5/S1 disc ..., 100 = canal")
    p.add_argument("--output-measurements", type=Path, help="per-level measurements (.csv or .json by extension): disc heights/volume/disc-to-CSF ratio, body heights/wedge/volume, canal AP diameter and area at each disc, slip; fused value plus mean, SD and 95%% interval over the samples; also added to the summary")
    p.add_argument("--output-measurements-plot", type=Path, help="PNG: disc heights and canal area per level with their 95%% intervals")
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
        if all(v is None for v in _outputs_from_args(args).values()):
            raise InputError("nothing to write: give --output-segmentation and/or --output-uncertainty "
                             "(and optionally --output-summary, --output-instances, --output-measurements)")
        summary = segment_file(args, args.image, _outputs_from_args(args), progress, 0.0, 1.0)
        progress.done(summary=str(args.output_summary) if args.output_summary else None)
        if args.progress != "json":
            _print_summary(summary)
        return 0
    finally:
        progress.close()


def _outputs_from_args(args) -> dict[str, Path | None]:
    return {"segmentation": args.output_segmentation, "uncertainty": args.output_uncertainty,
            "structure_uncertainty": args.output_structure_uncertainty,
            "probabilities": args.output_probabilities, "extras": args.output_extras,
            "summary": args.output_summary, "instances": args.output_instances,
            "measurements": args.output_measurements, "measurements_plot": args.output_measurements_plot}


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
    from SpineSegDiffLib.inference.settings import SegmentSettings

    out.check_output_paths(list(outputs.values()))
    if outputs["segmentation"] is not None:
        out.segmentation_format(outputs["segmentation"])
    measuring = any(outputs.get(k) is not None for k in ("instances", "measurements", "measurements_plot"))
    if measuring:
        from SpineSegDiffLib.measure import files as measure_files

        if outputs.get("measurements") is not None:
            measure_files.measurements_format(outputs["measurements"])
        if outputs.get("instances") is not None:
            measure_files.check_instances_path(outputs["instances"])
    sub = SubProgress(progress, "load", start, end)
    sub(0.0, f"reading {image_path.name}")
    image = read_mri(image_path)
    model = _load_model(args)
    settings = SegmentSettings(samples=args.samples or model.default("samples", 5),
                               steps=args.steps or model.default("steps", 10),
                               fused_steps=args.fused_steps, seed=args.seed,
                               batch_slices=args.batch_slices,
                               extras=outputs.get("extras") is not None,
                               cache=not args.no_cache, sample_masks=measuring)
    result = segment_image(image, model, settings,
                           lambda stage, f, msg="", **kw: progress.update(stage, start + (end - start) * f, msg, **kw),
                           input_name=str(image_path))
    if measuring:
        from SpineSegDiffLib.measure.case import measure_case

        progress.update("fuse", start + (end - start) * 0.95, "levels and measurements")
        t_measure = time.perf_counter()
        report, instances = measure_case(result.labelmap, image, result.sample_labelmaps)
        result.summary["timings"]["measure_s"] = round(time.perf_counter() - t_measure, 3)
        result.summary["levels_and_measurements"] = report
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
    if outputs.get("instances") is not None:
        measure_files.write_instances(instances, outputs["instances"])
    if outputs.get("measurements") is not None:
        measure_files.write_measurements(report, outputs["measurements"])
    if outputs.get("measurements_plot") is not None:
        measure_files.plot_measurements(report, outputs["measurements_plot"])
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
        outputs = {"segmentation": args.output_dir / f"{case}.seg.nrrd",
                   "uncertainty": args.output_dir / f"{case}_uncertainty.nii.gz",
                   "structure_uncertainty": None, "probabilities": None, "extras": None,
                   "instances": None, "measurements": None, "measurements_plot": None,
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
    levels = summary.get("levels_and_measurements")
    if levels is not None:
        names = ", ".join(lv["name"] + ("(partial)" if lv["partial"] else "") for lv in levels["levels"]) or "none"
        print(f"  levels (anchored at: {levels['anchor']}): {names}")
        for warning in levels["warnings"]:
            print(f"  warning: {warning}")
