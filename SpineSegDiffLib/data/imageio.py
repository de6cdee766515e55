"""Read, check and write 3D MRI volumes and label maps (SimpleITK).

Every problem a user can fix (missing, corrupt, absurd or unsuitable file) becomes
an ``InputError`` whose one-line message names the file, the problem and the fix.
Writes go through ``SpineSegDiffLib.core.atomic`` so a failed write never leaves a
half-written file or replaces a good one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import InputError, OutputError
from SpineSegDiffLib.data.image_integrity import (
    ORTHOGONALITY_TOLERANCE,
    Incomplete,
    check_complete,
    nifti_shear_degrees,
)

SUPPORTED_EXTENSIONS = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")

# 256 Mi voxels (1 GiB as float32): far above any lumbar MRI (a 0.5 mm isotropic
# 512^3 volume is 128 Mi), low enough to refuse a corrupt header before allocating.
MAX_VOXELS = 256 * 1024**2

# Two largest axes must hold at least this many voxels: the model works on
# 2D slices, so one slice is fine, but a 4x4 "image" is not an MRI.
MIN_INPLANE_VOXELS = 16

# Relative tolerance for "same geometry": float32 NIfTI headers round origins and
# spacings at about 1e-6 relative, resampling tools at about 1e-4.
GEOMETRY_TOLERANCE = 1e-3

Geometry = Mapping[str, Any]


def image_extension(path: str | os.PathLike) -> str:
    """The file's (compound-aware, lower-case) extension, e.g. ``.nii.gz``.

    Raises ``InputError`` if it is not one of ``SUPPORTED_EXTENSIONS``.
    """
    name = Path(path).name.lower()
    # longest first so ".nii.gz" wins over a bare ".gz"
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    raise InputError(f"{path}: unsupported file type; use one of {', '.join(SUPPORTED_EXTENSIONS)}")


def _sitk_reason(exc: Exception) -> str:
    """The useful part of a (multi-line, C++-flavoured) SimpleITK / ITK error."""
    text = str(exc)
    for marker in ("sitk::ERROR:", "ITK ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    # drop ITK's "ClassName(0x55d...): " prefix and join the rest on one line
    text = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return (text[:240] + "...") if len(text) > 240 else (text or type(exc).__name__)


def read_image(path: str | os.PathLike, *, what: str = "image") -> sitk.Image:
    """Read a scalar image after checking its header (size, components) first.

    ``what`` names the file's role in messages ("MRI", "label", ...).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}; check the path")
    if not path.is_file():
        raise InputError(f"{what} {path} is a folder, not an image file; give the image file itself")
    ext = image_extension(path)
    try:  # before ITK reads the header: it would only warn and replace the grid
        shear = nifti_shear_degrees(path)
    except (Incomplete, OSError):
        shear = None  # a damaged file: the checks below name the problem
    if shear is not None:
        raise InputError(f"{what} {path} has a sheared voxel grid (its sform's axes are {shear:.2g} degrees "
                         "off perpendicular); ITK would silently replace it by another grid, so results "
                         "would not lie on the image: resample it onto a non-sheared grid first")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {what} {path}: not a valid {ext} file ({_sitk_reason(exc)}); "
                         f"re-export it") from None
    size = reader.GetSize()
    n_voxels = int(np.prod(size, dtype=np.float64))
    if n_voxels > MAX_VOXELS:
        # refused from the header alone, before any pixel memory is allocated
        raise InputError(f"{what} {path} claims {'x'.join(map(str, size))} = {n_voxels:,} voxels, above "
                         f"the limit of {MAX_VOXELS:,} (SpineSegDiffLib.data.imageio.MAX_VOXELS); crop or "
                         f"downsample it, or check that the file is not corrupt")
    if reader.GetNumberOfComponents() > 1:
        raise InputError(f"{what} {path} has {reader.GetNumberOfComponents()} components per voxel "
                         f"(colour or vector image); SpineSegDiff needs a single-channel volume")
    try:  # before ITK allocates: it would fill missing voxels with zeros without a word
        check_complete(path, header_voxel_bytes(reader))
    except Incomplete as exc:
        raise InputError(f"{what} {path} is incomplete: {exc}; re-export or copy the file again") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror or exc}); check the file") from None
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {what} {path} ({_sitk_reason(exc)}); the file may be truncated, "
                         f"its header invalid or its data file missing: re-export it") from None


def header_voxel_bytes(reader: sitk.ImageFileReader) -> int:
    """Uncompressed voxel bytes the header read by ``reader`` describes."""
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())
    item = sitk.GetArrayViewFromImage(probe).dtype.itemsize
    n_voxels = int(np.prod(reader.GetSize(), dtype=np.float64))
    return n_voxels * item * max(1, reader.GetNumberOfComponents())


def verify_written(path: str | os.PathLike, size: tuple[int, ...], final: str | os.PathLike) -> None:
    """Read a just-written file back: its header must parse, describe ``size`` voxels and
    the file must hold all the data (a full disk can cut ITK's gzip writer short silently)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        found = tuple(reader.GetSize())
        if found[: len(size)] != tuple(size):
            raise Incomplete(f"its header describes {found} voxels instead of {tuple(size)}")
        check_complete(path, header_voxel_bytes(reader), values=False)
    except (RuntimeError, Incomplete, InputError) as exc:
        reason = _sitk_reason(exc) if isinstance(exc, RuntimeError) else str(exc)
        raise OutputError(f"cannot write {final}: the written file is incomplete ({reason}); "
                          "it was removed: free disk space and run again") from None


def validate_mri(image: sitk.Image, path: str | os.PathLike) -> None:
    """Refuse images that cannot be a 3D MRI volume.

    Checks: 3D, scalar real pixels, the two largest axes >= ``MIN_INPLANE_VOXELS``,
    spacing positive and finite, direction not singular, all voxels finite, not constant.
    """
    dim = image.GetDimension()
    if dim != 3:
        raise InputError(f"{path} is {dim}D; SpineSegDiff needs a 3D MRI volume")
    if image.GetNumberOfComponentsPerPixel() > 1 or "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path} has {image.GetPixelIDTypeAsString()} voxels; SpineSegDiff needs a "
                         f"single-channel real-valued MRI (export the magnitude image)")
    size = image.GetSize()
    if sorted(size)[1] < MIN_INPLANE_VOXELS:
        raise InputError(f"{path} is only {'x'.join(map(str, size))} voxels; an MRI needs at least "
                         f"{MIN_INPLANE_VOXELS} voxels along two axes")
    spacing = np.asarray(image.GetSpacing())
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise InputError(f"{path} has voxel spacing {tuple(spacing)} mm; spacing must be positive, "
                         f"fix the file's header")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-3:
        raise InputError(f"{path} has an invalid (singular) direction matrix; fix the file's header")
    off = float(np.max(np.abs(direction.T @ direction - np.eye(3))))
    if off > ORTHOGONALITY_TOLERANCE:
        # results go back onto the input's exact grid; a sheared or scaled direction
        # cannot be reproduced by the reorientation, so the output would move
        raise InputError(f"{path} has a direction matrix that is not orthonormal (sheared or scaled "
                         f"axes, off by up to {off:.2g}); resample it onto an orthogonal grid first")
    voxels = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(voxels.dtype, np.floating):
        n_nan = int(np.count_nonzero(np.isnan(voxels)))
        n_inf = int(np.count_nonzero(np.isinf(voxels)))
        if n_nan or n_inf:
            raise InputError(f"{path} has {n_nan + n_inf:,} voxels that are not finite ({n_nan:,} NaN, "
                             f"{n_inf:,} Inf); fix or re-export the image")
    low, high = voxels.min(), voxels.max()
    if low == high:
        raise InputError(f"{path} is constant (all voxels = {float(low):g}): not an MRI")


# Voxels this many times longer along one axis than another: a slab of a few thick
# slices or a mis-scaled header, not a lumbar MRI the model can read.
MAX_ANISOTROPY = 20.0


def grid_warnings(image: sitk.Image, path: str | os.PathLike) -> list[str]:
    """Warnings about a grid the model is unlikely to read well (never a refusal)."""
    spacing = np.asarray(image.GetSpacing(), float)
    ratio = float(spacing.max() / spacing.min())
    notes = []
    if ratio > MAX_ANISOTROPY:
        notes.append(f"{path}: voxels of {_fmt(spacing)} mm are {ratio:.0f} times longer along one axis "
                     f"than another (more than {MAX_ANISOTROPY:g}); the model reads ~2 mm slices, so "
                     "the result may be empty or wrong: check the header's spacing or resample the image")
    return notes


def read_mri(path: str | os.PathLike) -> sitk.Image:
    """Read and validate a 3D MRI volume (see ``validate_mri``)."""
    image = read_image(path, what="MRI")
    validate_mri(image, path)
    return image


def read_label(path: str | os.PathLike, reference: sitk.Image | None = None,
               reference_path: str | os.PathLike | None = None) -> sitk.Image:
    """Read a 3D label map of whole, non-negative numbers on ``reference``'s grid.

    Float files holding whole numbers (common for NIfTI masks) are accepted. The
    result is UInt8 when every value fits, else UInt16. If ``reference`` is given
    its size must match exactly and origin/spacing/direction within
    ``GEOMETRY_TOLERANCE``.
    """
    image = read_image(path, what="label")
    if image.GetDimension() != 3:
        raise InputError(f"label {path} is {image.GetDimension()}D; a label map must be 3D like its image")
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise InputError(f"label {path} has NaN or infinite values; a label map holds whole numbers")
        if not np.array_equal(values, np.round(values)):
            raise InputError(f"label {path} has non-integer values; a label map holds whole numbers "
                             f"(was it resampled with linear interpolation? use nearest neighbour)")
    low, high = float(values.min()), float(values.max())
    if low < 0:
        raise InputError(f"label {path} has negative values (min {low:g}); label values must be >= 0")
    if high > np.iinfo(np.uint16).max:
        raise InputError(f"label {path} has values up to {high:g}; label values must be <= 65535")
    image = sitk.Cast(image, sitk.sitkUInt8 if high <= 255 else sitk.sitkUInt16)
    if reference is not None:
        ok, why = same_geometry(image, reference)
        if not ok:
            raise InputError(f"label {path} does not match image {reference_path} (label vs image: "
                             f"{why}); the label "
                             f"must lie on the image's voxel grid (resample it onto the image)")
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write ``image`` compressed, atomically (temporary name, then rename)."""
    path = Path(path)
    ext = image_extension(path)
    try:
        if ext == ".mhd":
            _write_header_and_data(image, path)
        else:
            with atomic_path(path, verify=lambda tmp: verify_written(tmp, image.GetSize(), path)) as tmp:
                sitk.WriteImage(image, str(tmp), useCompression=True)
    except RuntimeError as exc:
        if "No space left" in str(exc) or "quota" in str(exc).lower():
            raise OutputError(f"cannot write {path}: no space left on the device; nothing was written "
                              "under that name, free space or choose another folder and run again") from None
        raise InputError(f"cannot write {path} ({_sitk_reason(exc)}); check the folder, the free space "
                         f"and that the format can hold this image") from None
    except OSError as exc:  # mkdtemp / rename of the .mhd pair on a full or read-only disk
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); free space or choose "
                          "another folder and run again") from None


def _write_header_and_data(image: sitk.Image, path: Path) -> None:
    # A .mhd header names its data file; writing both under their final names in a
    # temporary folder keeps that reference right, then data goes into place before
    # the header so a reader never sees a header without its data.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmp_dir / path.name), useCompression=True)
        verify_written(tmp_dir / path.name, image.GetSize(), path)
        for written in sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def geometry_of(image: sitk.Image) -> dict[str, tuple]:
    """Origin, spacing, direction (row-major, as SimpleITK) and size of ``image``."""
    return {
        "origin": tuple(image.GetOrigin()),
        "spacing": tuple(image.GetSpacing()),
        "direction": tuple(image.GetDirection()),
        "size": tuple(image.GetSize()),
    }


def same_geometry(a: sitk.Image | Geometry, b: sitk.Image | Geometry,
                  tol: float = GEOMETRY_TOLERANCE) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` share a voxel grid, and if not, what differs.

    Size must be equal; spacing within ``tol`` relative; origin within ``tol``
    times the largest voxel size; direction elements within ``tol``.
    Accepts images or ``geometry_of`` dicts.
    """
    ga = a if isinstance(a, Mapping) else geometry_of(a)
    gb = b if isinstance(b, Mapping) else geometry_of(b)
    if tuple(ga["size"]) != tuple(gb["size"]):
        return False, f"size {_fmt(ga['size'], 'x')} vs {_fmt(gb['size'], 'x')} voxels"
    sa, sb = np.asarray(ga["spacing"], float), np.asarray(gb["spacing"], float)
    if np.any(np.abs(sa - sb) > tol * np.maximum(np.abs(sa), np.abs(sb))):
        return False, f"spacing {_fmt(sa)} vs {_fmt(sb)} mm"
    shift = float(np.linalg.norm(np.asarray(ga["origin"], float) - np.asarray(gb["origin"], float)))
    if shift > tol * float(max(sa.max(), sb.max())):
        return False, f"origin {_fmt(ga['origin'])} vs {_fmt(gb['origin'])} mm (shifted by {shift:.3g} mm)"
    da, db = np.asarray(ga["direction"], float), np.asarray(gb["direction"], float)
    if np.max(np.abs(da - db)) > tol:
        return False, f"direction (orientation) differs by up to {np.max(np.abs(da - db)):.3g}"
    return True, ""


def _fmt(values, sep: str = ", ") -> str:
    if sep == "x":  # sizes: whole numbers
        return sep.join(str(int(v)) for v in values)
    return "(" + sep.join(f"{float(v):.4g}" for v in values) + ")"
