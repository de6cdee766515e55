"""`spinesegdiff dicom-seg`: a labelmap on a DICOM series -> DICOM SEG, with the engine's own writer.

The Slicer module's Export runs this on the reviewed segmentation, so a SEG from Slicer and
one from `segment --output-dicom-seg` are the same kind of object (same codes, algorithm
identification, references); corrected structures are marked SEMIAUTOMATIC.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from SpineSegDiffLib.core.errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("labelmap", type=Path, help="labelmap (values = structure numbers) on the series' voxel grid")
    p.add_argument("series_folder", type=Path, help="folder holding the DICOM series the labelmap segments")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="the DICOM SEG to write (.dcm)")
    p.add_argument("--series", metavar="UID", help="the Series Instance UID when the folder holds several series")
    p.add_argument("--summary", type=Path, metavar="FILE",
                   help="the run's summary JSON: names the model (id, version) and settings in the SEG")
    p.add_argument("--edited", action="append", default=[], metavar="STRUCTURE",
                   help="a structure a person corrected (e.g. 'vertebrae'): SEMIAUTOMATIC; repeatable")


def _model_from_summary(path: Path | None) -> tuple[dict, dict]:
    if path is None:
        return {}, {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--summary {path}: cannot read it ({exc})") from None
    return summary.get("model") or {}, summary.get("settings") or {}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk

    from SpineSegDiffLib.cli.dicom_options import is_dicom_input
    from SpineSegDiffLib.core.labels import STRUCTURES
    from SpineSegDiffLib.data.dicom_input import read_dicom_series
    from SpineSegDiffLib.data.dicom_seg import check_dicom_seg_path, labelmap_on_grid, write_dicom_seg
    from SpineSegDiffLib.data.imageio import read_label

    names = {s.key for s in STRUCTURES}
    unknown = sorted(set(args.edited) - names)
    if unknown:
        raise InputError(f"--edited {', '.join(unknown)}: not a structure; use {', '.join(sorted(names))}")
    check_dicom_seg_path(args.output, is_dicom_input(args.series_folder), "--output")
    model, settings = _model_from_summary(args.summary)
    series = read_dicom_series(args.series_folder, args.series)
    labelmap = labelmap_on_grid(read_label(args.labelmap), series.image)
    stray = sorted(set(np.unique(sitk.GetArrayViewFromImage(labelmap)).tolist()) - {0} - {s.value for s in STRUCTURES})
    if stray:
        raise InputError(f"{args.labelmap} has values {stray} that are no structure; expected "
                         + ", ".join(f"{s.value} = {s.name}" for s in STRUCTURES))
    write_dicom_seg(labelmap, series.image, series.datasets, args.output, model, settings,
                    edited=frozenset(args.edited))
    print(f"wrote {args.output} ({len(series.datasets)} frames, series {series.info.uid})")
    return 0
