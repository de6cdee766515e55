"""`spinesegdiff segment`: one volume or DICOM series, or a folder of volumes in batch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from SpineSegDiffLib.cli.batch import add_batch_arguments, select_cases
from SpineSegDiffLib.cli.dicom_options import (
    add_dicom_arguments,
    check_dicom_options,
    is_dicom_input,
    read_input,
    write_dicom_seg_output,
    write_dicom_uncertainty_output,
)
from SpineSegDiffLib.core.device_names import DEVICE_CHOICES
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.inference.settings import SegmentSettings


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path,
                   help="3-D MRI (.mha .nii .nii.gz .nrrd), a DICOM series folder (a folder holding DICOM files "
                        "is read as a series), or a folder of image files for batch use")
    p.add_argument("--model", default="spinesegdiff-demo",
                   help="model .zip, or a model id from `spinesegdiff models list` (default: the bundled demo model)")
    p.add_argument("--samples", type=_samples_value, default=None,
                   help="ensemble size S, 1-64: more samples, better uncertainty, longer run (default: the model's); "
                        "'auto': draw 3, 5, 7, ... samples and stop once the fused masks and the uncertainty stop "
                        "changing (at most 15; see docs/architecture.md)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps K per sample, 1-1000 (default: the model's)")
    p.add_argument("--fused-steps", type=int, default=None, help="how many of the last steps are fused, 1-K (default: the model's)")
    p.add_argument("--start", choices=["noise", "presegmentation"], default=None,
                   help="where sampling starts: pure noise, or the model's presegmentation noised to --t-max "
                        "(fewer steps; needs a model with a presegmenter). Default: the model's "
                        "(presegmentation when it has a presegmenter)")
    p.add_argument("--t-max", type=int, default=None,
                   help="--start presegmentation: noise the presegmentation to this step of the "
                        "1000-step schedule, then run --steps steps down (default: the model's)")
    p.add_argument("--crop", choices=["auto", "slices", "off"], default=None,
                   help="where the ensemble samples, from the model's presegmentation: 'slices' only the "
                        "sagittal slices holding the spine (plus 10 mm), unchanged on those; 'auto' also "
                        "only the spine's box within each slice (plus 20 mm; faster, but the crop changes the "
                        "network's context: see benchmarks/README.md); 'off' the whole field of view. Outside "
                        "what is sampled the result is background with uncertainty 0; a model without a "
                        "presegmenter is not cropped. The summary records the box, the slices kept and the "
                        f"pixel fraction (default: {SegmentSettings.crop})")
    p.add_argument("--crop-margin", type=float, default=None, metavar="MM",
                   help="--crop auto: margin around the presegmented spine within each slice, 0-500 mm "
                        f"(default: {SegmentSettings.crop_margin_mm:g})")
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
    p.add_argument("--output-instances", type=Path, help="level labels (.nii.gz/.nii/.nrrd/.mha), SPIDER values: 1 = S1, 2 = L5 ... 6 = L1, 7 = T12, 100 + n vertebra cut by the field of view, 201 = L5/S1 disc ..., 100 = canal")
    p.add_argument("--output-measurements", type=Path, help="per-level measurements (.csv or .json by extension): disc heights/volume/disc-to-CSF ratio, body heights/wedge/volume, canal AP diameter and area at each disc, slip; fused value plus mean, SD and 95%% interval over the samples; also added to the summary")
    p.add_argument("--output-measurements-plot", type=Path, help="PNG: disc heights and canal area per level with their 95%% intervals")
    p.add_argument("--level-segments", action="store_true",
                   help="a .seg.nrrd segmentation holds one segment per level (\"L4\", \"L4/L5 disc\", canal; the level as "
                        "anatomic region) instead of one per structure (--output-instances X.seg.nrrd always does)")
    p.add_argument("--output-dir", type=Path, help="batch mode (IMAGE is a folder): one set of outputs per image here (may be IMAGE itself: results and hidden temporary files are never read as inputs); finished cases are skipped")
    add_batch_arguments(p)
    add_dicom_arguments(p)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where the network runs")
    p.add_argument("--batch-slices", type=int, default=None, help="slices per network batch, 1-4096 (default: from free memory)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or keep drawn samples in the per-user sample cache "
                        "(by default changing only --samples reuses the samples already drawn)")
    p.add_argument("--progress", default="bar", choices=["bar", "json", "none"], help="progress display: bar on stderr, JSON lines on stdout, or none")


def _samples_value(text: str) -> int | str:
    """--samples: a whole number, or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib.core.progress import make_progress

    _check_options(args)  # before anything is read, loaded or written
    progress = make_progress(args.progress)
    try:
        if args.image.is_dir() and not is_dicom_input(args.image):
            return _run_folder(args, progress)
        if args.part is not None:
            raise InputError(f"--part {args.part}: only for batch mode (a folder of image files with --output-dir)")
        if all(v is None for v in _outputs_from_args(args).values()):
            raise InputError("nothing to write: give --output-segmentation, --output-uncertainty, "
                             "--output-presegmentation and/or --output-dicom-seg (and optionally "
                             "--output-summary, --output-instances, --output-measurements)")
        summary = segment_file(args, args.image, _outputs_from_args(args), progress, 0.0, 1.0)
        progress.done(summary=str(args.output_summary) if args.output_summary else None)
        if args.progress != "json":
            _print_summary(summary)
        return 0
    finally:
        progress.close()


def _check_options(args) -> None:
    """Ranges of the numeric options, checked as given (None = the model's default, later)."""
    from SpineSegDiffLib.inference.settings import MAX_STEPS, SegmentSettings

    SegmentSettings(samples=1 if args.samples in (None, "auto") else args.samples,
                    steps=(args.steps if args.steps is not None
                           else max(MAX_STEPS, args.fused_steps or 0)),
                    fused_steps=args.fused_steps, seed=args.seed,
                    batch_slices=args.batch_slices,
                    crop_margin_mm=(SegmentSettings.crop_margin_mm if args.crop_margin is None
                                    else args.crop_margin)).validate()


def _outputs_from_args(args) -> dict[str, Path | None]:
    return {"segmentation": args.output_segmentation, "presegmentation": args.output_presegmentation,
            "uncertainty": args.output_uncertainty,
            "structure_uncertainty": args.output_structure_uncertainty,
            "probabilities": args.output_probabilities, "extras": args.output_extras,
            "summary": args.output_summary, "instances": args.output_instances,
            "measurements": args.output_measurements, "measurements_plot": args.output_measurements_plot,
            "dicom_seg": args.output_dicom_seg, "dicom_uncertainty": args.output_dicom_uncertainty}


def _load_model(args):
    from SpineSegDiffLib.inference.loading import load_model

    if not hasattr(args, "_loaded_model"):
        args._loaded_model = load_model(_model_info(args).path, args.device)
    return args._loaded_model


def _model_info(args):
    """model.json of the chosen model (no weights, no torch), once per process."""
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.model.registry import resolve_model

    if not hasattr(args, "_model_info"):
        args._model_info = ModelInfo.read(resolve_model(args.model))
    return args._model_info


def _segment_with_network(args, image, settings, outputs: dict, report, input_name: str):
    """The full pipeline (torch): loads the model, draws what the cache lacks, writes the presegmentation."""
    from SpineSegDiffLib.data import outputs as out
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.presegmentation import model_presegmentation

    model = _load_model(args)
    on_presegmentation = None
    if outputs.get("presegmentation") is not None:
        if model_presegmentation(model) is None:
            raise InputError(f"--output-presegmentation: the model {model.identity.get('id')} has no "
                             "presegmenter; leave the option out or use a model with one")

        def on_presegmentation(labelmap) -> None:
            out.write_segmentation(labelmap, outputs["presegmentation"])
            report("presegmentation", 0.04, "presegmentation written", path=str(outputs["presegmentation"]))

    return segment_image(image, model, settings, report, input_name=input_name,
                         on_presegmentation=on_presegmentation)


def segment_file(args, image_path: Path, outputs: dict[str, Path | None], progress, start: float, end: float) -> dict:
    from SpineSegDiffLib.core.progress import SubProgress
    from SpineSegDiffLib.data import outputs as out
    import SimpleITK as sitk

    from SpineSegDiffLib.core.log import warn
    from SpineSegDiffLib.data.imageio import grid_warnings
    from SpineSegDiffLib.inference.presegmentation import default_start, default_steps
    from SpineSegDiffLib.inference.settings import SegmentSettings

    out.check_output_paths(outputs, [image_path])
    level_segments = getattr(args, "level_segments", False) and outputs.get("segmentation") is not None
    if level_segments and not str(outputs["segmentation"]).lower().endswith(".seg.nrrd"):
        raise InputError(f"--level-segments: --output-segmentation {outputs['segmentation']} is a labelmap; "
                         "give a .seg.nrrd name (or use --output-instances for a labelmap of levels)")
    measuring = level_segments or any(outputs.get(k) is not None
                                      for k in ("instances", "measurements", "measurements_plot"))
    if measuring:
        from SpineSegDiffLib.measure import files as measure_files

        measure_files.check_outputs(outputs.get("instances"), outputs.get("measurements"))
    check_dicom_options(image_path, getattr(args, "series", None), outputs.get("dicom_seg"),
                        outputs.get("dicom_uncertainty"))
    sub = SubProgress(progress, "load", start, end)
    sub(0.0, f"reading {image_path.name}")
    image, dicom = read_input(image_path, getattr(args, "series", None))
    info = _model_info(args)
    start_kind = args.start or default_start(info)
    from SpineSegDiffLib.inference.auto_samples import CAP

    auto = args.samples == "auto"
    settings = SegmentSettings(samples=(CAP if auto else info.default("samples", 5) if args.samples is None
                                        else args.samples), samples_auto=auto,
                               steps=default_steps(info, start_kind) if args.steps is None else args.steps,
                               fused_steps=args.fused_steps, seed=args.seed,
                               batch_slices=args.batch_slices,
                               extras=outputs.get("extras") is not None,
                               cache=not args.no_cache, sample_masks=measuring,
                               start=start_kind, t_max=args.t_max,
                               crop=args.crop or SegmentSettings.crop,
                               crop_margin_mm=(SegmentSettings.crop_margin_mm if args.crop_margin is None
                                               else args.crop_margin))
    report = lambda stage, f, msg="", **kw: progress.update(stage, start + (end - start) * f, msg, **kw)  # noqa: E731
    result = None
    if outputs.get("presegmentation") is None:  # every sample on disk: re-fuse them, no torch, no network
        from SpineSegDiffLib.inference.cached_run import segment_from_cache

        result = segment_from_cache(image, info, settings, args.device, input_name=str(image_path))
    if result is None:
        result = _segment_with_network(args, image, settings, outputs, report, str(image_path))
    notes = grid_warnings(image, image_path)
    if not sitk.GetArrayViewFromImage(result.labelmap).any():
        notes.append(f"{image_path}: no structure was found (empty segmentation); check that the image is "
                     "a lumbar spine MRI with a plausible header (spacing, orientation)")
    for note in notes:
        warn(note)
        result.summary.setdefault("notes", []).append(note)
    if measuring:
        from SpineSegDiffLib.measure.case import calibration_mismatch, measure_case

        progress.update("fuse", start + (end - start) * 0.95, "levels and measurements")
        t_measure = time.perf_counter()
        report, instances = measure_case(result.labelmap, image, result.sample_labelmaps)
        mismatch = calibration_mismatch(report, info.identity.get("id"), info.identity.get("version"))
        report["warnings"] += [mismatch] if mismatch else []
        result.summary["timings"]["measure_s"] = round(time.perf_counter() - t_measure, 3)
        result.summary["levels_and_measurements"] = report
    t0 = time.perf_counter()
    progress.update("write", start + (end - start) * 0.97, "writing outputs")
    if outputs["segmentation"] is not None and level_segments:
        measure_files.write_level_segmentation(instances, outputs["segmentation"], result.labelmap)
    elif outputs["segmentation"] is not None:
        out.write_segmentation(result.labelmap, outputs["segmentation"])
    if outputs["uncertainty"] is not None:
        out.write_float_image(result.uncertainty, outputs["uncertainty"])
    if outputs.get("structure_uncertainty") is not None:
        out.write_stack(result.structure_uncertainty, outputs["structure_uncertainty"])
    if outputs.get("probabilities") is not None:
        out.write_stack(result.probabilities, outputs["probabilities"])
    if outputs.get("extras") is not None:
        paths = out.extras_paths(outputs["extras"])
        for name, images in result.extras.items():
            out.write_stack(images, paths[name])
    if measuring:
        measure_files.write_outputs(report, instances, result.labelmap, instances_path=outputs.get("instances"),
                                    measurements_path=outputs.get("measurements"),
                                    plot_path=outputs.get("measurements_plot"))
    if outputs.get("dicom_seg") is not None:
        write_dicom_seg_output(outputs["dicom_seg"], result.labelmap, dicom, info.identity, result.summary["settings"])
    if outputs.get("dicom_uncertainty") is not None:
        write_dicom_uncertainty_output(outputs["dicom_uncertainty"], result.uncertainty, dicom)
    result.summary["timings"]["write_s"] = round(time.perf_counter() - t0, 3)
    result.summary["outputs"] = {k: str(v) for k, v in outputs.items() if v is not None}
    if dicom is not None:
        result.summary["dicom_series"] = {"uid": dicom.info.uid, "images": len(dicom.files)}
    if outputs["summary"] is not None:
        out.write_summary(result.summary, outputs["summary"])  # last: marks the case finished
    return result.summary


def _case_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _batch_outputs(output_dir: Path, path: Path) -> dict[str, Path | None]:
    case = _case_name(path)
    return {"segmentation": output_dir / f"{case}.seg.nrrd",
            "uncertainty": output_dir / f"{case}_uncertainty.nii.gz",
            "structure_uncertainty": None, "probabilities": None, "extras": None,
            "instances": None, "measurements": None, "measurements_plot": None,
            "dicom_seg": None, "dicom_uncertainty": None, "presegmentation": None,
            "summary": output_dir / f"{case}_summary.json"}


def batch_inputs(folder: Path, output_dir: Path) -> list[Path]:
    """The images of a batch: never a hidden file (temporary '.part' files of a write in
    progress or of a killed run), never a segmentation, never a file this batch writes
    (the output folder may be the input folder)."""
    from SpineSegDiffLib.data.imageio import SUPPORTED_EXTENSIONS

    candidates = sorted(p for p in folder.iterdir()
                        if not p.name.startswith(".") and p.is_file()
                        and not p.name.lower().endswith(".seg.nrrd")
                        and any(p.name.lower().endswith(e) for e in SUPPORTED_EXTENSIONS))
    written = {o.resolve() for p in candidates for o in _batch_outputs(output_dir, p).values()
               if o is not None}
    return [p for p in candidates if p.resolve() not in written]


def _run_folder(args, progress) -> int:
    from SpineSegDiffLib.core.atomic import remove_stale_parts
    from SpineSegDiffLib.data.imageio import SUPPORTED_EXTENSIONS

    if args.output_dir is None:
        raise InputError(f"{args.image} is a folder: give --output-dir for batch segmentation")
    if args.series is not None or args.output_dicom_seg is not None or args.output_dicom_uncertainty is not None:
        raise InputError(f"{args.image} holds no DICOM files: --series and the DICOM outputs need a DICOM "
                         f"series folder")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise InputError(f"--output-dir {args.output_dir} is a file; give a folder")
    images = batch_inputs(args.image, args.output_dir)
    if not images:
        raise InputError(f"{args.image}: no images found (looked for {', '.join(SUPPORTED_EXTENSIONS)}) "
                         f"and no DICOM files (sub-folders are not searched: give a DICOM series' own folder)")
    images = select_cases(images, args.part)
    if args.output_dir.is_dir():
        removed = remove_stale_parts(args.output_dir)  # leftovers of a killed run
        if removed:
            print(f"removed {len(removed)} unfinished file(s) of an interrupted run from "
                  f"{args.output_dir}", file=sys.stderr)
    # every case's outputs checked before the first case runs (collisions, folder, types)
    all_outputs = [_batch_outputs(args.output_dir, p) for p in images]
    from SpineSegDiffLib.data.outputs import check_output_paths

    writers: dict[Path, Path] = {}
    for path, outputs in zip(images, all_outputs):
        check_output_paths(outputs, images)
        for output in filter(None, outputs.values()):
            other = writers.setdefault(output.resolve(), path)
            if other != path:
                raise InputError(f"{other.name} and {path.name} would both write {output}; "
                                 "rename one of them or segment them separately")
    failed = []
    for i, (path, outputs) in enumerate(zip(images, all_outputs)):
        case = _case_name(path)
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
    crop = s.get("crop", {})
    if crop.get("applied"):
        print(f"  sampled the spine's region: {crop['slices_kept']} of {crop['grid_shape'][0]} slices, "
              f"{100 * crop['pixel_fraction']:.0f}% of the grid's pixels (--crop {crop['setting']})")
    for key, entry in summary["structures"].items():
        print(f"  {entry['name']:<22} {entry['volume_ml']:8.1f} ml   mean uncertainty {entry['mean_uncertainty']:.3f}")
    for note in summary.get("notes", []):
        print(f"  note: {note}")
    levels = summary.get("levels_and_measurements")
    if levels is not None:
        from SpineSegDiffLib.cli.measure import report_lines

        for line in report_lines(levels):
            print(f"  {line}")
