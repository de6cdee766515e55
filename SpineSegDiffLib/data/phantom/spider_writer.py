"""Write phantom cases as a SPIDER-format folder (images/, masks/, overview.csv, gradings)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Sequence

import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_dir
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.phantom.case import (
    PhantomCase,
    check_sequences,
    generate_case,
)
from SpineSegDiffLib.data.phantom.contrast import SEQUENCES


# --- SPIDER folder -------------------------------------------------------------------
def _csv_text(header: Sequence[str], rows: list[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_spider_folder(out_dir: str | Path, cases: int, seed: int,
                        sequences: Sequence[str] = SEQUENCES,
                        progress: Callable[[int, int, PhantomCase], None] | None = None) -> Path:
    """Write ``cases`` phantoms as a SPIDER-format folder; nothing appears until all are done.

    ``progress(done, total, case)`` is called after each case.
    """
    out = Path(out_dir)
    sequences = check_sequences(sequences)
    if cases < 1:
        raise InputError(f"--cases {cases}: ask for at least one phantom case")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; pick another folder or remove it")
    if out.is_dir():
        out.rmdir()  # an empty folder is replaced by the finished one
    overview, gradings = [], []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i in range(cases):
            case = generate_case(seed, i, sequences)
            meta = case.metadata
            for seq, image in case.images.items():
                name = f"{case.patient_id}_{seq}"
                sitk.WriteImage(image, str(tmp / "images" / f"{name}.mha"), useCompression=True)
                sitk.WriteImage(case.mask, str(tmp / "masks" / f"{name}.mha"), useCompression=True)
                overview.append([name, case.patient_id, seq, len(meta["vertebra_values"]),
                                 len(meta["disc_values"]), seed, i] + meta["size_xyz"]
                                + [round(v, 4) for v in meta["spacing_xyz"]])
            for value, grade in sorted(meta["grades"].items()):
                gradings.append([case.patient_id, value, meta["disc_names"][value], grade])
            if progress is not None:
                progress(i + 1, cases, case)
        (tmp / "overview.csv").write_text(_csv_text(
            ["new_file_name", "patient_id", "sequence", "num_vertebrae", "num_discs",
             "phantom_seed", "phantom_index", "size_x", "size_y", "size_z",
             "spacing_x", "spacing_y", "spacing_z"], overview), encoding="utf-8")
        (tmp / "radiological_gradings.csv").write_text(_csv_text(
            ["patient_id", "ivd_label", "ivd_name", "pfirrmann_grade"], gradings), encoding="utf-8")
    return out
