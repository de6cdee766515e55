"""The DICOM side of `spinesegdiff segment`: series input (--series) and DICOM SEG output.

Kept out of cli/segment.py so that file stays about the segmentation run itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from SpineSegDiffLib.core.errors import InputError

if TYPE_CHECKING:  # the parser is built without loading SimpleITK
    import SimpleITK as sitk


def add_dicom_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--series", metavar="UID",
                   help="DICOM input: the Series Instance UID to segment when the folder holds several series "
                        "(without it, such a folder is refused with the list of its series)")
    p.add_argument("--output-dicom-seg", type=Path, metavar="FILE",
                   help="DICOM Segmentation object (.dcm) referencing the input series, one coded segment per "
                        "structure; needs a DICOM series as input")
    p.add_argument("--output-dicom-uncertainty", type=Path, metavar="FILE",
                   help="the combined uncertainty as a DICOM Parametric Map (.dcm, float 0 sure .. 1 unsure) "
                        "on the input series; needs a DICOM series as input")


def is_dicom_input(path: Path) -> bool:
    from SpineSegDiffLib.data.dicom_input import holds_dicom

    return path.is_dir() and holds_dicom(path)


def check_dicom_options(path: Path, series: str | None, dicom_seg: Path | None,
                        dicom_uncertainty: Path | None = None) -> None:
    """Before any work: DICOM-only options need a DICOM series folder."""
    from SpineSegDiffLib.data.dicom_seg import check_dicom_seg_path

    dicom = is_dicom_input(path)
    if series is not None and not dicom:
        raise InputError(f"--series {series}: {path} is not a folder of DICOM files; --series picks a "
                         f"series from a DICOM folder")
    if dicom_seg is not None:
        check_dicom_seg_path(dicom_seg, dicom)
    if dicom_uncertainty is not None:
        check_dicom_seg_path(dicom_uncertainty, dicom, "--output-dicom-uncertainty")


def read_input(path: Path, series: str | None):
    """(volume, DicomSeries or None): a DICOM series folder or an image file."""
    from SpineSegDiffLib.data.imageio import read_mri

    if is_dicom_input(path):
        from SpineSegDiffLib.data.dicom_input import read_dicom_series

        dicom = read_dicom_series(path, series)
        return dicom.image, dicom
    return read_mri(path), None


def write_dicom_seg_output(dicom_seg: Path, labelmap: sitk.Image, dicom, model_identity: dict,
                           settings: dict) -> None:
    from SpineSegDiffLib.data.dicom_seg import write_dicom_seg

    write_dicom_seg(labelmap, dicom.image, dicom.datasets, dicom_seg, model_identity, settings)


def write_dicom_uncertainty_output(path: Path, uncertainty: sitk.Image, dicom) -> None:
    from SpineSegDiffLib.data.dicom_uncertainty import write_dicom_uncertainty

    write_dicom_uncertainty(uncertainty, dicom.image, dicom.datasets, path)
