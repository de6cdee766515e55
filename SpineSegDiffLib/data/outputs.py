"""Writing segmentation results: format chosen by the file extension, always atomic."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_path, write_text
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES, TERMINOLOGY_CONTEXT
from SpineSegDiffLib.data.imageio import (
    SUPPORTED_EXTENSIONS,
    image_extension,
    verify_written,
    write_image,
)


def segmentation_format(path: str | Path) -> str:
    """'seg.nrrd' for a Slicer segmentation, 'labelmap' for the image formats."""
    name = str(path).lower()
    if name.endswith(".seg.nrrd"):
        return "seg.nrrd"
    image_extension(path)  # raises a clear error for an unsupported extension
    return "labelmap"


def terminology(structure) -> dict:
    return {"contextName": TERMINOLOGY_CONTEXT,
            "category": list(structure.category), "type": list(structure.type)}


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)[None, :]
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def write_seg_nrrd(labelmap: sitk.Image, path: str | Path) -> None:
    """A Slicer segmentation with one named, coloured segment per structure."""
    voxels = sitk.GetArrayViewFromImage(labelmap)
    write_segments(labelmap, [(voxels == s.value, {"id": s.key, "name": s.name, "color": list(s.color),
                                                   "terminology": terminology(s)}) for s in STRUCTURES], path)


def write_segments(reference: sitk.Image, segments: list[tuple[np.ndarray, dict]], path: str | Path) -> None:
    """A Slicer segmentation of (boolean z y x mask, slicerio segment properties) pairs on
    ``reference``'s geometry, written atomically."""
    import slicerio

    shape_zyx = sitk.GetArrayViewFromImage(reference).shape
    seg = slicerio.create_segmentation(shape_zyx[::-1], ijk_to_lps(reference))
    for mask, props in segments:
        slicerio.add_segment(seg, np.ascontiguousarray(np.transpose(mask, (2, 1, 0))), props)
    # read back before the rename (complete data; the size is slicerio's business: it may
    # store segments as layers)
    with atomic_path(path, verify=lambda tmp: verify_written(tmp, (), path)) as tmp:
        # gzip level 1, not slicerio's default 9: labels compress about as well, several times faster
        slicerio.write_segmentation(str(tmp), seg, compression_level=1)


def write_segmentation(labelmap: sitk.Image, path: str | Path) -> None:
    if segmentation_format(path) == "seg.nrrd":
        write_seg_nrrd(labelmap, path)
    else:
        write_image(sitk.Cast(labelmap, sitk.sitkUInt8), path)


def write_float_image(image: sitk.Image, path: str | Path) -> None:
    write_image(sitk.Cast(image, sitk.sitkFloat32), path)


def write_stack(images: list[sitk.Image], path: str | Path) -> None:
    """Per-structure float maps as one multi-component image (canal, vertebrae, discs)."""
    write_image(sitk.Compose([sitk.Cast(i, sitk.sitkFloat32) for i in images]), path)


def write_summary(summary: dict, path: str | Path) -> None:
    write_text(path, json.dumps(summary, indent=2) + "\n")


# extension each kind of output accepts (summary: JSON; maps: any image format but the
# segmentation-only .seg.nrrd, whose name would promise Slicer a segmentation)
IMAGE_OUTPUT_KINDS = ("uncertainty", "structure_uncertainty", "probabilities", "extras")
EXTRAS_NAMES = ("variance", "mutual_information")


def extras_paths(base: str | Path) -> dict[str, Path]:
    """The files ``--output-extras BASE`` writes: BASE_variance.EXT, BASE_mutual_information.EXT."""
    base = str(base)
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if base.lower().endswith(ext):
            return {n: Path(base[: -len(ext)] + f"_{n}" + base[-len(ext):]) for n in EXTRAS_NAMES}
    return {n: Path(base + f"_{n}.nii.gz") for n in EXTRAS_NAMES}


def planned_files(outputs: dict[str, Path | None]) -> list[tuple[str, Path]]:
    """(option name, path) of every file a run with these outputs writes."""
    files = []
    for kind, path in outputs.items():
        if path is None:
            continue
        option = "--output-" + kind.replace("_", "-")
        if kind == "extras":
            files += [(option, p) for p in extras_paths(path).values()]
        else:
            files.append((option, Path(path)))
    return files


# outputs that are not images: their extensions (None: checked by the module that writes them)
NON_IMAGE_OUTPUTS: dict[str, tuple[str, ...] | None] = {
    "summary": (".json",), "measurements": (".csv", ".json"), "measurements_plot": (".png",),
    "dicom_seg": None, "dicom_uncertainty": None}


def _check_extension(kind: str, path: Path) -> None:
    option = "--output-" + kind.replace("_", "-")
    name = path.name.lower()
    if kind in NON_IMAGE_OUTPUTS and kind != "summary":
        allowed = NON_IMAGE_OUTPUTS[kind]
        if allowed is not None and not name.endswith(allowed):
            raise InputError(f"{option} {path}: use a file name ending in {' or '.join(allowed)}")
        return
    if kind == "summary":
        if not name.endswith(".json"):
            raise InputError(f"{option} {path}: a summary is a .json file; give a name ending in .json")
        return
    if kind in ("segmentation", "presegmentation", "instances"):  # instances: one segment per level
        if name.endswith(".seg.nrrd"):
            return
        allowed = ".seg.nrrd, " + ", ".join(SUPPORTED_EXTENSIONS)
    else:
        allowed = ", ".join(SUPPORTED_EXTENSIONS)
    if kind not in ("segmentation", "presegmentation") and name.endswith(".seg.nrrd"):
        raise InputError(f"{option} {path}: .seg.nrrd is for segmentations; use one of {allowed}")
    if not any(name.endswith(e) for e in SUPPORTED_EXTENSIONS):
        raise InputError(f"{option} {path}: unsupported file type; use one of {allowed}")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:  # hard links, bind mounts: the same file under another name
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_folder_writable(folder: Path, option: str, path: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot create the output folder {folder} "
                         f"({exc.strerror}); choose another folder") from None
    try:  # a real write, not os.access: root, ACLs and read-only mounts all answer truthfully
        fd, probe = tempfile.mkstemp(prefix=".spinesegdiff-write-test.", suffix=".part", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{option} {path}: the folder {folder} is not writable ({exc.strerror}); "
                         "choose a folder you can write to") from None


def check_output_paths(outputs: dict[str, Path | None], inputs: list[Path] = ()) -> None:
    """Refuse, before any work, outputs that could not be written or would destroy something.

    Every output: an accepted extension for its kind; not an input file; not another
    output; not an existing folder, device, FIFO or other non-regular file (replacing one
    is never what the user meant); in a folder that exists (or can be made) and is writable.
    """
    for kind, path in outputs.items():
        if path is not None:
            _check_extension(kind, Path(path))
    files = planned_files(outputs)
    for i, (option, path) in enumerate(files):
        for source in inputs:
            if _same_file(path, Path(source)):
                raise InputError(f"{option} {path} is the input file; writing it would destroy the "
                                 "input: give the output another name")
        for other_option, other in files[:i]:
            if _same_file(path, other):
                raise InputError(f"{option} and {other_option} both write {path}; give each output "
                                 "its own file name")
        if path.is_symlink() and not path.exists():
            raise InputError(f"{option} {path} is a broken symbolic link; remove it or choose another name")
        if path.exists() and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file (a device, FIFO or socket)"
            raise InputError(f"{option} {path} exists and is {what}; give the name of a file to write")
    for folder in sorted({p.parent for _, p in files}):
        option, path = next((o, p) for o, p in files if p.parent == folder)
        _check_folder_writable(folder, option, path)
