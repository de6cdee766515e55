"""Read the real lumbar MRI development set with partial labels (``../shared/data/real``).

Each case labels only some structures: vertebral bodies (sets VB1, VB2, VB3; body only,
no posterior elements) or the five lumbar discs (IVD). Unlabelled structures are *not*
background, so consumers must score and train only on ``annotated_labels``.
The folder's README.md describes the sets; docs/data.md summarises it.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY
from SpineSegDiffLib.data.imageio import read_label, read_mri

ENV_VARIABLE = "SPINESEGDIFF_REAL_DATA"

# cases.csv "annotated" column -> (semantic structure key, body only?)
_ANNOTATION_KINDS: dict[str, tuple[str, bool]] = {
    "vertebral_body": ("vertebrae", True),
    "disc": ("discs", False),
}
_REQUIRED_COLUMNS = ("case", "set", "sequence", "annotated", "labels")

CaseT = TypeVar("CaseT")


class RealDataWarning(UserWarning):
    """A real case's mask differs from what cases.csv says; the message names the file."""


def default_real_folder() -> Path | None:
    """The real-data folder from $SPINESEGDIFF_REAL_DATA, or None when it is not set.

    No path is assumed: an installed engine has no checkout around it. The project's
    scripts (demo.sh, test.sh) set the variable when ../shared/data/real exists."""
    override = os.environ.get(ENV_VARIABLE)
    return Path(override) if override else None


@dataclass(frozen=True)
class RealCase:
    """One real volume with a partial mask (instance values 1..n in the file)."""

    case_id: str  # "VB2_04"
    set: str  # "VB1", "VB2", "VB3" or "IVD"
    sequence: str  # as written in cases.csv, e.g. "T2 TSE"
    annotated: frozenset[str]  # semantic structure keys labelled here: {"vertebrae"} or {"discs"}
    body_only: bool  # vertebra masks cover the vertebral body only
    image_path: Path
    mask_path: Path
    labels: tuple[int, ...] = ()  # instance values cases.csv lists for the mask

    @property
    def annotated_labels(self) -> frozenset[int]:
        """Semantic label values (labels.STRUCTURES) that this case's mask annotates."""
        return frozenset(BY_KEY[key].value for key in self.annotated)

    def load(self) -> tuple[sitk.Image, sitk.Image]:
        """Read (image, semantic uint8 label on the image's geometry).

        Every labelled voxel gets the case's structure value (2 vertebrae, 3 discs);
        0 means "not this structure", not "background" for other structures.
        """
        image = read_mri(self.image_path)
        mask = read_label(self.mask_path, image, self.image_path)  # same grid, or InputError naming both
        instance = sitk.GetArrayViewFromImage(mask)
        if self.labels:
            unexpected = np.setdiff1d(np.unique(instance), (0, *self.labels))
            if unexpected.size:
                warnings.warn(f"{self.mask_path}: values {unexpected.tolist()} are not listed in "
                              f"cases.csv ({' '.join(map(str, self.labels))}); they are kept as labelled",
                              RealDataWarning, stacklevel=2)
        (structure_value,) = self.annotated_labels
        semantic = sitk.GetImageFromArray(np.where(instance > 0, structure_value, 0).astype(np.uint8))
        semantic.CopyInformation(image)
        return image, semantic


def _parse_labels(text: str, csv_path: Path, case_id: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split())
    except ValueError:
        raise InputError(f"{csv_path}: case {case_id} has labels {text!r}; expected integers "
                         "separated by spaces") from None


def read_real_folder(folder: str | Path | None = None) -> list[RealCase]:
    """List the cases in ``folder``/cases.csv (default: :func:`default_real_folder`).

    Every listed image and mask must exist; images are read by :meth:`RealCase.load`.
    """
    folder = Path(folder) if folder is not None else default_real_folder()
    if folder is None:
        raise InputError(f"no real-data folder given: pass one, or set {ENV_VARIABLE} to the folder "
                         "that holds cases.csv, images/ and masks/")
    csv_path = folder / "cases.csv"
    if not csv_path.is_file():
        raise InputError(f"real-data folder {folder} has no cases.csv; point {ENV_VARIABLE} at the folder "
                         "that holds cases.csv, images/ and masks/")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"{csv_path} lacks column(s) {', '.join(missing)}; expected "
                                 f"{', '.join(_REQUIRED_COLUMNS)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {csv_path}: {exc}") from None

    cases = []
    for row in rows:
        case_id = row["case"].strip()
        kind = _ANNOTATION_KINDS.get(row["annotated"].strip())
        if kind is None:
            raise InputError(f"{csv_path}: case {case_id} has annotated={row['annotated']!r}; expected one "
                             f"of {', '.join(_ANNOTATION_KINDS)}")
        paths = [folder / sub / f"{case_id}.nii.gz" for sub in ("images", "masks")]
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path} listed in {csv_path} does not exist; restore the file or "
                                 "remove its row")
        structure, body_only = kind
        cases.append(RealCase(case_id, row["set"].strip(), row["sequence"].strip(), frozenset({structure}),
                              body_only, paths[0], paths[1], _parse_labels(row["labels"], csv_path, case_id)))
    if not cases:
        raise InputError(f"{csv_path} lists no cases")
    return cases


def split_train_held_out(cases: Sequence[CaseT], set_of: Callable[[CaseT], str] = lambda case: case.set
                         ) -> tuple[list[CaseT], list[CaseT]]:
    """(trained on, held out): the patient-wise split of the real cases the demo model uses.

    Within each set, in ``cases.csv`` order, even positions train and odd positions are held
    out for the report, so every set is on both sides. Both lists are grouped by set, in the
    order the sets first appear. ``set_of`` names a case's set (``.set`` by default).
    """
    by_set: dict[str, list[CaseT]] = {}
    for case in cases:
        by_set.setdefault(set_of(case), []).append(case)
    train = [case for items in by_set.values() for case in items[0::2]]
    held = [case for items in by_set.values() for case in items[1::2]]
    return train, held
