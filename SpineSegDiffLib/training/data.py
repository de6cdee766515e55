"""Training data on the model grid, from any of the project's data folders.

A folder is recognised by what it holds: a SPIDER folder (`images/`, `masks/`), a
retraining set written by the Slicer export (`dataset.json`, `imagesTr/`), or the
real-MRI folder with partial labels (`cases.csv`). Every case is resampled onto the
model grid once and kept in memory as slices; partial labels are kept as a per-case
flag of which structures are annotated, so the loss ignores the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.grid.geometry import NORMALISED_CLIP, GridSpec, to_model_grid

if TYPE_CHECKING:
    import SimpleITK as sitk



@dataclass
class GridCase:
    case_id: str
    patient_id: str
    source: str  # "spider", "dataset" or "real:<set>"
    slices: np.ndarray  # (n, H, W) float32, normalised
    labels: np.ndarray  # (n, H, W) uint8, semantic 0..3
    annotated: np.ndarray  # (C,) bool: which structures this case labels
    body_only: bool = False  # vertebra labels cover bodies only (no posterior elements)
    spacing_mm: tuple[float, float, float] | None = None  # (slice, row, col) of the grid; None: unknown


def folder_kind(folder: Path) -> str:
    if (folder / "dataset.json").is_file():
        return "dataset"
    if (folder / "cases.csv").is_file():
        return "real"
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return "spider"
    raise InputError(f"{folder}: not a training folder; expected a SPIDER folder (images/, masks/), "
                     "a retraining set (dataset.json) or the real-MRI folder (cases.csv)")


def _annotated(keys: Iterable[str]) -> np.ndarray:
    keys = set(keys)
    return np.array([s.key in keys for s in STRUCTURES], dtype=bool)


@dataclass
class LabelledCase:
    """One case of any data folder, on its own (input) geometry."""

    case_id: str
    patient_id: str
    source: str  # "spider", "dataset" or "real:<set>"
    image: "sitk.Image"
    label: "sitk.Image"  # semantic 0..3 on the image's geometry
    annotated: np.ndarray  # (C,) bool
    body_only: bool = False


def iter_labelled_cases(folder: str | Path, sequences: tuple[str, ...] | None = None,
                        limit: int | None = None) -> Iterator[LabelledCase]:
    """Every case of one folder (SPIDER, retraining set or real-MRI), read lazily."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: data folder not found")
    kind = folder_kind(folder)
    if kind == "spider":
        from SpineSegDiffLib.data.spider import read_spider_folder

        for case in read_spider_folder(folder, sequences=sequences)[:limit]:
            image, semantic, _ = case.load()
            yield LabelledCase(case.case_id, case.patient_id, "spider", image, semantic,
                               _annotated(s.key for s in STRUCTURES))
    elif kind == "dataset":
        from SpineSegDiffLib.data.dataset_format import read_dataset
        from SpineSegDiffLib.data.imageio import read_label, read_mri

        for case in read_dataset(folder)[:limit]:
            image = read_mri(case.image_path)
            label = read_label(case.label_path, image, case.image_path)
            yield LabelledCase(case.case_id, case.case_id, "dataset", image, label, _annotated(case.annotated))
    else:
        from SpineSegDiffLib.data.realdata import read_real_folder

        for case in read_real_folder(folder)[:limit]:
            image, semantic = case.load()
            yield LabelledCase(case.case_id, case.case_id, f"real:{case.set}", image, semantic,
                               _annotated(case.annotated), case.body_only)


def load_folder(folder: str | Path, spec: GridSpec, progress: Callable[[str], None] | None = None,
                sequences: tuple[str, ...] | None = None, limit: int | None = None) -> list[GridCase]:
    """Every case of one folder, on the model grid."""
    out: list[GridCase] = []
    for case in iter_labelled_cases(folder, sequences, limit):
        out.append(_grid_case(case.case_id, case.patient_id, case.source, case.image, case.label,
                              case.annotated, spec, case.body_only))
        if progress:
            progress(case.case_id)
    return out


def _grid_case(case_id, patient_id, source, image, label, annotated, spec, body_only=False) -> GridCase:
    grid = to_model_grid(image, spec)
    labels = grid.labels_to_grid(label)
    col_mm, row_mm, slice_mm = grid.grid_image.GetSpacing()  # grid axes: x cols, y rows, z slices
    return GridCase(case_id, str(patient_id), source, grid.slices.astype(np.float32),
                    labels.astype(np.uint8), annotated, body_only, (slice_mm, row_mm, col_mm))


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(…, H, W) labels 0..C -> (…, C, H, W) float32 masks for structures 1..C."""
    return np.stack([(labels == s.value) for s in STRUCTURES], axis=-3).astype(np.float32)


def data_summary(cases: list[GridCase]) -> dict:
    by_source: dict[str, int] = {}
    for c in cases:
        by_source[c.source] = by_source.get(c.source, 0) + 1
    return {"cases": len(cases), "patients": len({c.patient_id for c in cases}),
            "slices": int(sum(c.slices.shape[0] for c in cases)), "by_source": by_source}



def save_grid_cases(path: str | Path, cases: list[GridCase]) -> None:
    """A compressed `.npz` cache of cases already on the model grid (images as uint8).

    Resampling is the slow part of reading data; a cache makes repeated training runs
    (and runs on a machine without the original files) start at once.
    """
    from SpineSegDiffLib.core.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, c in enumerate(cases):
        arrays[f"s{i}"] = _quantise(c.slices)
        arrays[f"l{i}"] = c.labels
        meta.append([c.case_id, c.patient_id, c.source, "".join("1" if a else "0" for a in c.annotated),
                     "1" if c.body_only else "0", ",".join(map(str, c.spacing_mm or ()))])
    arrays["meta"] = np.array(meta, dtype=str).reshape(len(meta), 6)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_grid_cases(path: str | Path) -> list[GridCase]:
    try:
        data = np.load(path, allow_pickle=False)
        meta = data["meta"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a SpineSegDiff grid cache ({exc})") from None
    out = []
    for i, row in enumerate(meta):
        case_id, patient_id, source, annotated, body_only = row[:5]
        # caches written before the grid spacing was recorded have five columns
        spacing = tuple(float(v) for v in row[5].split(",")) if len(row) > 5 and row[5] else None
        out.append(GridCase(str(case_id), str(patient_id), str(source), _dequantise(data[f"s{i}"]),
                            data[f"l{i}"].astype(np.uint8), np.array([a == "1" for a in annotated]),
                            body_only == "1", spacing))
    return out


# normalised intensities live in NORMALISED_CLIP; 8 bits over that range is finer
# than the noise of any MRI
_Q_LOW, _Q_HIGH = NORMALISED_CLIP


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.round((np.clip(x, _Q_LOW, _Q_HIGH) - _Q_LOW) / (_Q_HIGH - _Q_LOW) * 255).astype(np.uint8)


def _dequantise(q: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) / 255.0 * (_Q_HIGH - _Q_LOW) + _Q_LOW).astype(np.float32)
