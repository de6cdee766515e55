"""Read a DICOM MR series folder as a 3-D volume (pydicom for tags, SimpleITK/GDCM for voxels).

The rule for `spinesegdiff segment FOLDER`: a folder that holds DICOM files (the 'DICM'
marker at byte 128) is one DICOM series (or several, to choose from with --series UID);
any other folder is a batch of image files (.mha .nii .nii.gz .nrrd).

The geometry is checked before any voxel is read, so an unusable series fails with one
line naming the problem: several series without --series, a UID not in the folder,
mixed orientations or image sizes, several images at one position (echoes, time points),
missing slices, non-uniform slice spacing, multi-frame (enhanced) objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError

# Relative tolerance on slice gaps and orientation cosines: scanners write positions with
# about 1e-4 mm rounding; a real gap or tilt is orders of magnitude larger.
SPACING_TOLERANCE = 0.01
ORIENTATION_TOLERANCE = 1e-4
_MARKER_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(_MARKER_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (not in sub-folders), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def holds_dicom(folder: Path) -> bool:
    return any(p.is_file() and is_dicom_file(p) for p in folder.iterdir())


@dataclass
class SeriesInfo:
    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.uid}  {self.modality or '?'}  {len(self.files)} images  '{self.description}'"


@dataclass
class DicomSeries:
    """The volume read from a series, and the source datasets (sorted as the volume's slices)."""

    image: sitk.Image
    info: SeriesInfo
    datasets: list  # pydicom Datasets, without pixel data, slice k of the volume first

    @property
    def files(self) -> list[Path]:
        return self.info.files


def _read_header(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise InputError(f"cannot read DICOM file {path} ({exc}); re-export the series") from None


def list_series(folder: Path) -> tuple[list[SeriesInfo], dict[Path, object]]:
    """Every series in ``folder`` (by Series Instance UID) and each file's header."""
    headers = {p: _read_header(p) for p in dicom_files(folder)}
    by_uid: dict[str, SeriesInfo] = {}
    for path, ds in headers.items():
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise InputError(f"DICOM file {path} has no Series Instance UID; re-export the series")
        info = by_uid.setdefault(uid, SeriesInfo(uid, str(ds.get("SeriesDescription", "")),
                                                 str(ds.get("Modality", ""))))
        info.files.append(path)
    return sorted(by_uid.values(), key=lambda s: s.uid), headers


def choose_series(folder: Path, series_uid: str | None) -> tuple[SeriesInfo, dict]:
    series, headers = list_series(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM files found in this folder")
    listing = "; ".join(s.line() for s in series)
    if series_uid is None:
        if len(series) > 1:
            raise InputError(f"{folder} holds {len(series)} DICOM series: {listing}. "
                             f"Choose one with --series UID")
        return series[0], headers
    for s in series:
        if s.uid == series_uid:
            return s, headers
    raise InputError(f"--series {series_uid}: no such series in {folder}; it holds: {listing}")


def _sorted_slices(info: SeriesInfo, headers: dict) -> tuple[list[Path], np.ndarray, np.ndarray, float]:
    """Files sorted along the slice normal, the orientation (row, column, normal), origin, spacing."""
    where = f"DICOM series {info.uid}"
    orientations, positions, sizes = [], [], set()
    for path in info.files:
        ds = headers[path]
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{where}: {path.name} is a multi-frame (enhanced) object; export the series "
                             f"as one file per slice (classic MR Image Storage)")
        if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
            raise InputError(f"{where}: {path.name} has no Image Orientation/Position (Patient); "
                             f"this is not a 3-D series")
        orientations.append(np.asarray(ds.ImageOrientationPatient, float))
        positions.append(np.asarray(ds.ImagePositionPatient, float))
        sizes.add((int(ds.Rows), int(ds.Columns)))
    if len(sizes) > 1:
        raise InputError(f"{where} mixes image sizes {sorted(sizes)}; export one acquisition per series")
    spread = np.max(np.abs(np.asarray(orientations) - orientations[0]))
    if spread > ORIENTATION_TOLERANCE:
        raise InputError(f"{where} mixes slice orientations (cosines differ by up to {spread:.3g}): it holds "
                         f"more than one stack (e.g. a localizer or several planes); export one stack per series")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    if len(info.files) < 2:
        raise InputError(f"{where} has a single image; SpineSegDiff needs a 3-D series of slices")
    along = np.asarray(positions) @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise InputError(f"{where} has several images at the same position ({len(info.files)} images, "
                         f"{len(np.unique(np.round(along, 3)))} positions): several echoes, time points or "
                         f"stacks; export one volume per series")
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > SPACING_TOLERANCE * step):
        if np.all(np.abs(gaps / step - np.round(gaps / step)) < SPACING_TOLERANCE):
            missing = int(np.sum(np.round(gaps / step) - 1))
            raise InputError(f"{where} is missing {missing} slice(s) (gaps of {gaps.max():.3g} mm in a "
                             f"{step:.3g} mm stack); re-export or re-send the complete series")
        raise InputError(f"{where} has non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); "
                         f"resample it to uniform spacing first")
    # in-plane positions must line up too: a sheared stack has no voxel grid
    first = np.asarray(positions)[order[0]]
    offsets = np.asarray(positions)[order] - first - np.outer(along - along[0], normal)
    if np.max(np.abs(offsets)) > SPACING_TOLERANCE * step:
        raise InputError(f"{where} is a sheared (gantry-tilted) stack; resample it onto a regular grid first")
    files = [info.files[i] for i in order]
    return files, np.stack([row, col, normal], axis=1), first, step


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> DicomSeries:
    """The chosen series as a volume whose geometry is the series' own (origin = first slice)."""
    from SpineSegDiffLib.data.imageio import MAX_VOXELS, validate_mri

    folder = Path(folder)
    info, headers = choose_series(folder, series_uid)
    files, direction, origin, step = _sorted_slices(info, headers)
    ds0 = headers[files[0]]
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    if rows * cols * len(files) > MAX_VOXELS:
        raise InputError(f"DICOM series {info.uid} has {rows}x{cols}x{len(files)} voxels, above the limit "
                         f"of {MAX_VOXELS:,}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the pixels of DICOM series {info.uid} in {folder} ({exc}); "
                         f"the files may be compressed with an unsupported codec or truncated") from None
    if image.GetPixelID() == sitk.sitkFloat64:  # rescaled voxels: float32 holds them, at half the memory
        image = sitk.Cast(image, sitk.sitkFloat32)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"DICOM series {info.uid} is a colour series; SpineSegDiff needs a greyscale MRI")
    pixel = [float(v) for v in ds0.PixelSpacing]  # row spacing (between rows), column spacing
    # the geometry from the tags we checked, not from the reader's guess (it looks at 2 slices)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([pixel[1], pixel[0], step])
    image.SetDirection([float(v) for v in direction.ravel()])
    validate_mri(image, folder)
    info.files = files
    return DicomSeries(image=image, info=info, datasets=[headers[f] for f in files])
