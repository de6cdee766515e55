"""Writing segmentation results: format chosen by the file extension, always atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_path, write_text
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES, TERMINOLOGY_CONTEXT
from SpineSegDiffLib.data.imageio import (
    image_extension,
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
    import slicerio

    voxels_zyx = sitk.GetArrayViewFromImage(labelmap)
    seg = slicerio.create_segmentation(voxels_zyx.shape[::-1], ijk_to_lps(labelmap))
    voxels_ijk = np.ascontiguousarray(np.transpose(voxels_zyx, (2, 1, 0)))
    for s in STRUCTURES:
        slicerio.add_segment(seg, voxels_ijk == s.value,
                             {"id": s.key, "name": s.name, "color": list(s.color),
                              "terminology": terminology(s)})
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), seg)


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


def check_output_paths(paths: list[Path | None]) -> None:
    """Fail before any work if an output folder cannot be created or two outputs collide."""
    real = [p for p in paths if p is not None]
    if len({p.resolve() for p in real}) != len(real):
        raise InputError("two outputs point to the same file; give each output its own path")
    for p in real:
        if p.exists() and p.is_dir():
            raise InputError(f"{p}: is a folder; give a file name for this output")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{p.parent}: cannot create the output folder ({exc.strerror})") from None
