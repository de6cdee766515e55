"""The retraining data set: nnU-Net v2 style folder written by the Slicer export.

Layout (see docs/architecture.md, "Retraining data set")::

    FOLDER/dataset.json
    FOLDER/imagesTr/{case}_0000.nii.gz
    FOLDER/labelsTr/{case}.nii.gz        values 0 background, 1 canal, 2 vertebrae, 3 discs

``dataset.json`` holds the nnU-Net keys plus a ``spinesegdiff`` block with the format
version and per-case provenance. Writers hold ``.dataset.lock`` while they update it,
so two exports into the same folder never lose a case.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_path, write_text
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES
from SpineSegDiffLib.data.imageio import verify_written

DATASET_FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
LOCK_NAME = ".dataset.lock"
FILE_ENDING = ".nii.gz"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
LABELS = {"background": 0, **{s.key: s.value for s in STRUCTURES}}
ALL_STRUCTURES = tuple(s.key for s in STRUCTURES)
GEOMETRY_TOLERANCE = 1e-4
LOCK_TIMEOUT_S = 10.0

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AUTO_ID = re.compile(r"^case_(\d+)$")


@dataclass(frozen=True)
class DatasetCase:
    """One training case on disk with where it came from."""

    case_id: str
    image_path: Path
    label_path: Path
    annotated: tuple[str, ...] = ALL_STRUCTURES  # structures labelled in this case
    provenance: dict[str, Any] = field(default_factory=dict)


CaseRecord = DatasetCase  # what add_case returns: the same record read_dataset gives


def image_path_for(folder: str | os.PathLike, case_id: str) -> Path:
    return Path(folder) / IMAGES_DIR / f"{case_id}_0000{FILE_ENDING}"


def label_path_for(folder: str | os.PathLike, case_id: str) -> Path:
    return Path(folder) / LABELS_DIR / f"{case_id}{FILE_ENDING}"


def create_dataset(folder: str | os.PathLike, name: str, exist_ok: bool = False) -> None:
    """Create an empty data set in ``folder`` (``exist_ok``: keep an existing one as it is)."""
    folder = Path(folder)
    json_path = folder / DATASET_JSON
    if json_path.exists():
        if exist_ok:
            _read_json(folder)  # still refuse a broken one
            return
        raise InputError(f"{folder} already holds a data set ({DATASET_JSON}); add cases to it "
                         "or choose an empty folder")
    if any(folder.glob(f"{LABELS_DIR}/*{FILE_ENDING}")):
        raise InputError(f"{folder / LABELS_DIR} holds label files but no {DATASET_JSON}; "
                         "choose an empty folder")
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (folder / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        if json_path.exists():  # another writer created it meanwhile
            if exist_ok:
                return
            raise InputError(f"{folder} already holds a data set ({DATASET_JSON})")
        _write_json(folder, {
            "name": name,
            "channel_names": {"0": "MRI"},
            "labels": dict(LABELS),
            "numTraining": 0,
            "file_ending": FILE_ENDING,
            "spinesegdiff": {"format_version": DATASET_FORMAT_VERSION, "cases": {}},
        })


def add_case(folder: str | os.PathLike, image: sitk.Image, label: sitk.Image,
             provenance: dict, case_id: str | None = None) -> CaseRecord:
    """Add one case (never overwriting another) and record its provenance.

    ``provenance`` keys (all optional): source, model_id, model_version, samples, date,
    edited_by_person, annotated_structures (default: all three).
    """
    folder = Path(folder)
    label_array = _check_case(image, label)
    record = _provenance_record(provenance)
    if case_id is not None and not _CASE_ID.match(case_id):
        raise InputError(f"case id '{case_id}' is not usable as a file name; use letters, digits, "
                         "'_', '-' or '.'")
    clean_label = sitk.GetImageFromArray(label_array)
    clean_label.CopyInformation(label)
    with _locked(folder):
        data = _read_json(folder)
        cases = data["spinesegdiff"]["cases"]
        if case_id is None:
            case_id = _next_free_id(folder, cases)
        elif case_id in cases or image_path_for(folder, case_id).exists() \
                or label_path_for(folder, case_id).exists():
            raise InputError(f"case '{case_id}' already exists in {folder}; choose another id "
                             "or leave it empty to get the next free one")
        image_path, label_path = image_path_for(folder, case_id), label_path_for(folder, case_id)
        # both files appear only once both are fully written
        with atomic_path(image_path) as tmp_image, atomic_path(label_path) as tmp_label:
            sitk.WriteImage(image, str(tmp_image), True)
            sitk.WriteImage(clean_label, str(tmp_label), True)
            # ITK's gzip writer does not report a short write (full disk): read both back
            # before either gets its final name
            verify_written(tmp_image, image.GetSize(), image_path)
            verify_written(tmp_label, clean_label.GetSize(), label_path)
        try:
            cases[case_id] = record
            data["numTraining"] = len(_case_ids_on_disk(folder))
            _write_json(folder, data)
        except BaseException:
            # keep files and dataset.json consistent: drop the files dataset.json does not list
            image_path.unlink(missing_ok=True)
            label_path.unlink(missing_ok=True)
            raise
    return DatasetCase(case_id, image_path, label_path,
                       tuple(record["annotated_structures"]), record)


def read_dataset(folder: str | os.PathLike) -> list[DatasetCase]:
    """All cases of a data set, sorted by id, with their annotated structures and provenance."""
    folder = Path(folder)
    data = _read_json(folder)
    json_path = folder / DATASET_JSON
    if data.get("labels") != LABELS:
        raise InputError(f"{json_path}: labels {data.get('labels')} are not SpineSegDiff's "
                         f"{LABELS}; relabel the data set")
    if data.get("file_ending") != FILE_ENDING:
        raise InputError(f"{json_path}: file_ending should be '{FILE_ENDING}'")
    recorded = data["spinesegdiff"]["cases"]
    case_ids = sorted(_case_ids_on_disk(folder) | set(recorded))
    if data.get("numTraining") != len(case_ids):
        raise InputError(f"{json_path}: numTraining is {data.get('numTraining')} but the folder "
                         f"holds {len(case_ids)} cases; fix numTraining")
    cases = []
    for case_id in case_ids:
        image_path, label_path = image_path_for(folder, case_id), label_path_for(folder, case_id)
        for path in (image_path, label_path):
            if not path.is_file():
                raise InputError(f"{path} is missing (case '{case_id}' in {json_path}); restore "
                                 "it or remove the case")
        provenance = recorded.get(case_id, {})
        annotated = tuple(provenance.get("annotated_structures", ALL_STRUCTURES))
        unknown = [k for k in annotated if k not in BY_KEY]
        if unknown:
            raise InputError(f"{json_path}: case '{case_id}' names unknown structures {unknown}; "
                             f"use {list(ALL_STRUCTURES)}")
        cases.append(DatasetCase(case_id, image_path, label_path, annotated, provenance))
    return cases


def load_case(case: DatasetCase) -> tuple[sitk.Image, sitk.Image]:
    """Read a case's image and label, checking label values and geometry."""
    image = _read_image(case.image_path)
    label = _read_image(case.label_path)
    try:
        _check_case(image, label)
    except InputError as exc:
        raise InputError(f"{case.label_path}: {exc}") from None
    return image, label


# ---------------------------------------------------------------- checks

def _check_case(image: sitk.Image, label: sitk.Image) -> np.ndarray:
    """Validate a case; return the label as uint8 array. Messages say what differs."""
    for what, img in (("image", image), ("label", label)):
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"the {what} must be a 3D single-channel volume "
                             f"(got {img.GetDimension()}D, {img.GetNumberOfComponentsPerPixel()} "
                             "components)")
    if label.GetSize() != image.GetSize():
        raise InputError(f"label size {label.GetSize()} differs from image size {image.GetSize()}; "
                         "resample the label onto the image")
    for what, a, b in (("origin", label.GetOrigin(), image.GetOrigin()),
                       ("spacing", label.GetSpacing(), image.GetSpacing()),
                       ("direction", label.GetDirection(), image.GetDirection())):
        if not np.allclose(a, b, rtol=0, atol=GEOMETRY_TOLERANCE):
            raise InputError(f"label {what} {tuple(round(v, 6) for v in a)} differs from image "
                             f"{what} {tuple(round(v, 6) for v in b)}; resample the label onto "
                             "the image")
    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    allowed = set(LABELS.values())
    bad = [v.item() for v in values if v not in allowed]
    if bad:
        raise InputError(f"label values {bad[:5]} are not allowed; use 0 background, "
                         + ", ".join(f"{s.value} {s.key}" for s in STRUCTURES))
    return array.astype(np.uint8)


def _provenance_record(provenance: dict) -> dict[str, Any]:
    if not isinstance(provenance, dict):
        raise InputError("provenance must be a dict")
    record = dict(provenance)
    record.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    annotated = record.setdefault("annotated_structures", list(ALL_STRUCTURES))
    if isinstance(annotated, str) or not all(k in BY_KEY for k in annotated):
        raise InputError(f"annotated_structures {annotated!r} must be a list of "
                         f"{list(ALL_STRUCTURES)}")
    record["annotated_structures"] = list(annotated)
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"provenance is not plain JSON ({exc})") from None
    return record


def _read_image(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{path} cannot be read as an image; restore it or remove the case") from None


# ---------------------------------------------------------------- files

def _case_ids_on_disk(folder: Path) -> set[str]:
    return {p.name[: -len(FILE_ENDING)] for p in (folder / LABELS_DIR).glob(f"*{FILE_ENDING}")
            if not p.name.startswith(".")}  # skip atomic temp files


def _next_free_id(folder: Path, cases: dict) -> str:
    # one past the highest number ever used, so a deleted case's id is not reused
    taken = set(cases) | _case_ids_on_disk(folder) | {
        p.name[: -len("_0000" + FILE_ENDING)] for p in (folder / IMAGES_DIR).glob("case_*")}
    numbers = [int(m.group(1)) for m in map(_AUTO_ID.match, taken) if m]
    return f"case_{max(numbers, default=0) + 1:04d}"


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / DATASET_JSON
    if not path.is_file():
        raise InputError(f"{path} not found; {folder} is not a SpineSegDiff data set "
                         "(create it first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); fix or recreate it") from None
    block = data.get("spinesegdiff") if isinstance(data, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("cases"), dict):
        raise InputError(f"{path} has no 'spinesegdiff' block with cases; it was not written "
                         "by SpineSegDiff")
    version = block.get("format_version")
    if not isinstance(version, int) or version > DATASET_FORMAT_VERSION:
        raise InputError(f"{path}: data set format {version} is not supported (this SpineSegDiff "
                         f"reads up to {DATASET_FORMAT_VERSION}); update SpineSegDiff")
    return data


def _write_json(folder: Path, data: dict[str, Any]) -> None:
    write_text(folder / DATASET_JSON, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _locked(folder: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``folder/.dataset.lock`` (created with O_EXCL) while updating the data set."""
    lock = folder / LOCK_NAME
    if not folder.is_dir():
        raise InputError(f"{folder} not found; create the data set first")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise InputError(f"{lock} is held by another writer; wait for it to finish, or "
                                 "delete the file if no export is running") from None
            time.sleep(0.02)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)
