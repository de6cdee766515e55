"""Read a SPIDER-format folder (van der Graaf et al., Sci Data 11, 264, 2024) into cases.

Layout: ``images/{patient}_{sequence}.mha`` and ``masks/`` with the same names, plus an
optional ``overview.csv`` (one row per series, ``new_file_name`` = file name without
extension). Mask values: 1-25 vertebrae, 100 spinal canal, 101-125 partially visible
vertebrae, 201-225 intervertebral discs (see docs/data.md for sources and caveats).
The project's own phantoms are written in the same format.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.imageio import SUPPORTED_EXTENSIONS, read_label, read_mri
from SpineSegDiffLib.data.spider_labels import (SEQUENCES, SpiderWarning, canonical_sequence,  # noqa: F401
                                                canonical_sequences, spider_to_semantic)  # (SpiderWarning, SEQUENCES: re-exported)

# data files that belong to an .mhd header, not images of their own
_COMPANION_SUFFIXES = (".raw", ".zraw")

_NAME_PATTERN = re.compile(r"^(?P<patient>[A-Za-z0-9-]+)_(?P<sequence>t1|t2|t2_space)$", re.IGNORECASE)
_SUFFIXES_LONGEST_FIRST = sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True)


def _read_mask_on(image: sitk.Image, image_path: Path, mask_path: Path) -> sitk.Image:
    # read_label refuses non-integer or negative values and a mask on another grid,
    # naming both files; values up to 65535 survive, so unknown ones can be reported
    mask = read_label(mask_path, image, image_path)
    # copy the image's header so later steps see bit-identical geometry
    mask.CopyInformation(image)
    return mask


@dataclass(frozen=True)
class SpiderCase:
    """One SPIDER series: image, optional mask, and where it came from."""

    case_id: str  # "12_t2": file name without extension
    patient_id: str  # "12"
    sequence: str  # one of SEQUENCES
    image_path: Path
    mask_path: Path | None
    metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # overview.csv row

    def load(self) -> tuple[sitk.Image, sitk.Image | None, sitk.Image | None]:
        """Read (image, semantic uint8 label, instance label with SPIDER's values).

        The image is validated as a 3D MRI; both labels lie on its exact geometry
        (a mask on another grid is an InputError naming both files). Labels are None
        without a mask.
        """
        image = read_mri(self.image_path)
        if self.mask_path is None:
            return image, None, None
        instance = _read_mask_on(image, self.image_path, self.mask_path)
        semantic_array = spider_to_semantic(sitk.GetArrayViewFromImage(instance), source=self.mask_path)
        semantic = sitk.GetImageFromArray(semantic_array)
        semantic.CopyInformation(image)
        return image, semantic, instance


def _strip_image_suffix(name: str) -> str | None:
    for suffix in _SUFFIXES_LONGEST_FIRST:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _read_overview(path: Path) -> dict[str, dict[str, str]]:
    """overview.csv rows keyed by case id (``new_file_name`` without extension)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "new_file_name" not in reader.fieldnames:
                raise InputError(f"{path} has no 'new_file_name' column; fix the header or remove the file")
            rows = {}
            for row in reader:
                name = (row.get("new_file_name") or "").strip()
                if name:
                    rows[_strip_image_suffix(name) or name] = {k: (v or "").strip() for k, v in row.items() if k}
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc}; fix or remove the file") from None


def _find_mask(masks_dir: Path, case_id: str, image_name: str) -> Path | None:
    same_name = masks_dir / image_name
    if same_name.is_file():
        return same_name
    for suffix in _SUFFIXES_LONGEST_FIRST:  # tolerate a mask saved in another format
        candidate = masks_dir / f"{case_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_spider_folder(folder: str | Path, sequences: Sequence[str] | None = None,
                       require_masks: bool = True) -> list[SpiderCase]:
    """List the cases of a SPIDER-format folder, sorted by patient then sequence.

    Files are only listed here; images are read by :meth:`SpiderCase.load`.
    With ``require_masks=False`` an image without mask is kept (``mask_path`` None)
    with a warning; otherwise it is an InputError naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"SPIDER folder {folder} does not exist; give the folder that holds images/ and masks/")
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise InputError(f"{folder} has no images/ folder; a SPIDER folder holds images/ and masks/")
    wanted = canonical_sequences(sequences)
    overview_path = folder / "overview.csv"
    overview = _read_overview(overview_path) if overview_path.is_file() else {}

    cases: list[SpiderCase] = []
    for image_path in sorted(images_dir.iterdir()):
        if (image_path.name.startswith(".") or not image_path.is_file()
                or image_path.suffix.lower() in _COMPANION_SUFFIXES):
            continue
        case_id = _strip_image_suffix(image_path.name)
        match = _NAME_PATTERN.match(case_id) if case_id else None
        if match is None:
            warnings.warn(f"{image_path}: file name is not PATIENT_SEQUENCE.mha with sequence one of "
                          f"{', '.join(SEQUENCES)}; skipped", SpiderWarning, stacklevel=2)
            continue
        sequence = canonical_sequence(match["sequence"])
        if sequence not in wanted:
            continue
        row = overview.get(case_id, {})
        patient_id = row.get("patient_id") or match["patient"]
        mask_path = _find_mask(masks_dir, case_id, image_path.name) if masks_dir.is_dir() else None
        if mask_path is None:
            message = f"image {image_path} has no mask {masks_dir / image_path.name}"
            if require_masks:
                raise InputError(f"{message}; add the mask or remove the image")
            warnings.warn(f"{message}; kept without labels", SpiderWarning, stacklevel=2)
        cases.append(SpiderCase(case_id, patient_id, sequence, image_path, mask_path, row))

    if not cases:
        which = "" if sequences is None else f" with sequence {', '.join(sorted(wanted))}"
        raise InputError(f"{images_dir} holds no SPIDER images{which} (expected names like 12_t2.mha)")
    cases.sort(key=lambda c: (_natural_key(c.patient_id), SEQUENCES.index(c.sequence)))
    return cases


def _natural_key(text: str) -> tuple:
    # "2" before "10": SPIDER patient ids are numbers stored as text
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


_C = TypeVar("_C")


def patient_split(cases: Sequence[_C], val_fraction: float, seed: int = 0) -> tuple[list[_C], list[_C]]:
    """Split cases (anything with a ``patient_id``) into (train, validation) by patient,
    so no patient is in both.

    Deterministic for a seed and independent of the order of ``cases``. With at least
    two patients and ``0 < val_fraction < 1`` both parts get at least one patient.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    patients = sorted({c.patient_id for c in cases}, key=_natural_key)
    n_val = int(round(val_fraction * len(patients)))
    if val_fraction > 0 and len(patients) >= 2:
        n_val = min(max(n_val, 1), len(patients) - 1)
    order = np.random.default_rng(seed).permutation(len(patients))
    val_patients = {patients[i] for i in order[:n_val]}
    train = [c for c in cases if c.patient_id not in val_patients]
    val = [c for c in cases if c.patient_id in val_patients]
    return train, val
