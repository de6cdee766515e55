"""Is an image file complete? Checked from its own bytes, because ITK is not told.

ITK's readers fill a short file's missing voxels with zeros, read a header-only file as
a volume of zeros, accept a gzip stream cut anywhere, and its NIfTI reader turns NaN
and Inf into 0; its gzip writer does not report a short write on a full disk. This
module compares what the header promises with what the file holds (for gzip, that the
stream ends with its end marker), so both reading and writing can refuse an incomplete
file. No SimpleITK, no torch: the Slicer process uses it too.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from SpineSegDiffLib.core.errors import InputError

CHUNK = 1 << 22

# NIfTI-1 datatype code -> numpy type (https://nifti.nimh.nih.gov/nifti-1/documentation)
_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 32: "c8", 64: "f8", 128: "u1",
                256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8", 2304: "u1"}
_NIFTI_COMPONENTS = {128: 3, 2304: 4}  # RGB24, RGBA32: bytes per voxel from bitpix anyway


class Incomplete(Exception):
    """The file holds less than its header promises (message: what is missing)."""


def _stream(path: Path, offset: int = 0):
    """The file's (decompressed for .gz) bytes from ``offset``, chunk by chunk."""
    if path.name.lower().endswith(".gz"):
        opener = gzip.open(path, "rb")
    else:
        opener = open(path, "rb")
    with opener as f:
        try:
            f.seek(offset)
            while chunk := f.read(CHUNK):
                yield chunk
        except EOFError:
            raise Incomplete("the gzip stream ends before its end marker: the file is truncated") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise Incomplete(f"the gzip stream is damaged ({exc})") from None


# ---------------------------------------------------------------- NIfTI

def _nifti_header(path: Path) -> tuple[np.dtype, int, int]:
    """(voxel dtype, voxel count, data offset) from a NIfTI-1 header."""
    raw = b""
    for chunk in _stream(path):
        raw += chunk
        if len(raw) >= 352:
            break
    if len(raw) < 348:
        raise Incomplete(f"only {len(raw)} bytes, shorter than a NIfTI header (348)")
    for order in "<>":
        if struct.unpack(order + "i", raw[:4])[0] == 348:
            break
    else:
        raise Incomplete("not a NIfTI-1 header")  # NIfTI-2 and others: ITK decides
    dims = struct.unpack(order + "8h", raw[40:56])
    datatype, bitpix = struct.unpack(order + "hh", raw[70:74])
    vox_offset = int(struct.unpack(order + "f", raw[108:112])[0])
    n = int(np.prod([max(1, d) for d in dims[1:1 + max(1, min(dims[0], 7))]], dtype=np.float64))
    kind = _NIFTI_TYPES.get(datatype, "u1")
    dtype = np.dtype(order + kind) if bitpix == 8 * np.dtype(kind).itemsize else np.dtype(f"V{max(1, bitpix // 8)}")
    return dtype, n, max(vox_offset, 348)


def _gzip_size_matches(path: Path, start: int, expected_end: int) -> bool:
    """Whether the gzip member's trailer (ISIZE: uncompressed size mod 2^32) says it holds
    exactly ``expected_end`` bytes. O(1): a cut file ends in data, not in this trailer
    (chance of a false match 2^-32); a mismatch (multi-member files too) falls back to
    reading the whole stream."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() - start < 18:  # gzip header + trailer
                return False
            f.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", f.read(4))
    except OSError:
        return False
    return isize == expected_end % (1 << 32)


def check_nifti(path: Path, values: bool = True) -> None:
    """Raise ``Incomplete`` unless all voxels are present; with ``values``, InputError on
    stored NaN/Inf (ITK would read them as 0), which needs the whole stream."""
    try:
        dtype, n_voxels, offset = _nifti_header(path)
    except Incomplete as exc:
        if "not a NIfTI-1" in str(exc):
            return
        raise
    expected = n_voxels * dtype.itemsize
    floating = values and dtype.kind in "fc"
    if not floating:  # sizes only: no need to read the voxels
        if not path.name.lower().endswith(".gz"):
            got = path.stat().st_size - offset
            if got < expected:
                raise Incomplete(f"holds {max(0, got):,} bytes of voxel data, its header promises "
                                 f"{expected:,} ({_describe_short(max(0, got), expected)})")
            return
        if _gzip_size_matches(path, 0, offset + expected):
            return
    got, non_finite, carry = 0, 0, b""
    for chunk in _stream(path, offset):
        got += len(chunk)
        if floating:  # ITK turns NaN/Inf into 0 silently: look at the stored values
            data = carry + chunk
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=dtype)[: max(0, n_voxels)]
            non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[usable:]
    if got < expected:
        raise Incomplete(f"holds {got:,} bytes of voxel data, its header promises {expected:,} "
                         f"({_describe_short(got, expected)})")
    if non_finite:
        raise InputError(f"{path} has {non_finite:,} voxels that are not finite (NaN or Inf); "
                         "fix or re-export the image")


def _describe_short(got: int, expected: int) -> str:
    if got == 0:
        return "header only, no voxels"
    return f"truncated: {100 * got / expected:.1f}% present"


# ---------------------------------------------------------------- NRRD and MetaImage

def _text_header(path: Path, end_marker: bytes) -> tuple[dict[str, str], int]:
    """Key/value lines of a text header and the byte offset where the data starts."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if end_marker == b"\n\n":
        end = head.find(b"\n\n")
        if end < 0:
            raise Incomplete("the header has no end (blank line): the file is truncated")
        lines, offset = head[:end].split(b"\n"), end + 2
    else:  # MetaImage: the header ends with its ElementDataFile line
        lines, offset = [], 0
        for line in head.splitlines(keepends=True):
            offset += len(line)
            lines.append(line.rstrip(b"\r\n"))
            if line.lower().startswith(b"elementdatafile"):
                break
        else:
            raise Incomplete("the header has no ElementDataFile line: the file is truncated")
    fields = {}
    for line in lines:
        text = line.decode("latin-1")
        for sep in (":=", ":", "="):
            if sep in text:
                key, value = text.split(sep, 1)
                fields[key.strip().lower()] = value.strip()
                break
    return fields, offset


def _check_data(path: Path, offset: int, compressed: bool, expected: int) -> None:
    if compressed and _gzip_size_matches(path, offset, expected):
        return  # a gzip stream (NRRD gzip encoding) whose trailer gives the full size
    if not compressed:
        got = path.stat().st_size - offset
    else:
        got, inflater = 0, zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        with open(path, "rb") as f:
            f.seek(offset)
            try:
                while (chunk := f.read(CHUNK)) and not inflater.eof:
                    got += len(inflater.decompress(chunk))
            except zlib.error as exc:
                raise Incomplete(f"the compressed data is damaged ({exc})") from None
        if not inflater.eof:
            raise Incomplete("the compressed data ends before its end marker: the file is truncated")
    if got < expected:
        raise Incomplete(f"holds {got:,} bytes of voxel data, its header promises {expected:,} "
                         f"({_describe_short(got, expected)})")


def check_nrrd(path: Path, voxel_bytes: int) -> None:
    fields, offset = _text_header(path, b"\n\n")
    if "data file" in fields or "datafile" in fields:
        return  # detached data: ITK reports a missing file itself
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        return  # ascii, bzip2...: rare; ITK's own errors apply
    _check_data(path, offset, encoding != "raw", voxel_bytes)


def check_metaimage(path: Path, voxel_bytes: int) -> None:
    fields, offset = _text_header(path, b"elementdatafile")
    data_file = fields.get("elementdatafile", "LOCAL")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if data_file.upper() == "LOCAL":
        _check_data(path, offset, compressed, voxel_bytes)
        return
    target = path.parent / data_file
    if " " in data_file or data_file.upper().startswith("LIST") or not target.is_file():
        return  # file lists and patterns: ITK decides; a missing file is ITK's clear error
    _check_data(target, 0, compressed, voxel_bytes)


def check_complete(path: str | os.PathLike, voxel_bytes: int, values: bool = True) -> None:
    """Raise ``Incomplete`` if ``path`` holds fewer voxel bytes than its header promises.

    ``voxel_bytes``: the uncompressed data size the header describes (from ITK's reading
    of it); NIfTI is read from its own header (ITK reports scaled types). ``values``:
    also refuse NaN/Inf stored in a float NIfTI (inputs; a just-written file needs only
    its size checked).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        check_nifti(path, values)
    elif name.endswith(".nrrd"):
        check_nrrd(path, voxel_bytes)
    elif name.endswith((".mha", ".mhd")):
        check_metaimage(path, voxel_bytes)


# ---------------------------------------------------------------- NIfTI orientation

ORTHOGONALITY_TOLERANCE = 1e-3  # |cos| of the angle between two voxel axes


def nifti_shear_degrees(path: str | os.PathLike) -> float | None:
    """How far (degrees) the axes of a NIfTI sform are from perpendicular, if beyond tolerance.

    ITK cannot hold a sheared grid: it replaces such an sform by the qform (a warning
    only), so the image, and every result, would lie on another grid than the file says.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    raw = b""
    for chunk in _stream(path):
        raw += chunk
        if len(raw) >= 348:
            break
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348:
            break
    else:
        return None
    sform_code = struct.unpack(order + "h", raw[254:256])[0]
    if sform_code <= 0:
        return None
    matrix = np.array(struct.unpack(order + "12f", raw[280:328]), dtype=float).reshape(3, 4)[:, :3]
    norms = np.linalg.norm(matrix, axis=0)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        return None  # degenerate: the direction checks after reading name it
    unit = matrix / norms
    cosines = np.abs(unit.T @ unit - np.eye(3))
    worst = float(cosines.max())
    if worst <= ORTHOGONALITY_TOLERANCE:
        return None
    return abs(90.0 - float(np.degrees(np.arccos(min(1.0, worst)))))
