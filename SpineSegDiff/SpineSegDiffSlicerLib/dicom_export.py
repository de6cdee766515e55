"""Export a (reviewed) result as DICOM SEG with the engine's own writer, in an engine process.

Offered when the input volume came from DICOM: Slicer's DICOM plugin records the instance
UIDs of the loaded series on the volume node (``DICOM.instanceUIDs``), and the DICOM
database gives each instance's file. The segments go to the engine as a labelmap on the
volume's grid with the series' files beside it, and ``spinesegdiff dicom-seg`` writes the
SEG, so the module and ``segment --output-dicom-seg`` produce the same object (codes,
algorithm identification, references). Qt-free; tested with slicer-core and a real process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError

from . import labelmaps, node_tags, volumes
from .export import edited_structures
from .process_runner import EngineProcess, python_environment
from .segments import structure_segment_values

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOMScalarVolumePlugin
SEG_TIMEOUT_S = 300.0


def instance_uids(volume_node) -> list[str]:
    """The SOP Instance UIDs of the DICOM series the volume was loaded from ([] if not DICOM)."""
    if volume_node is None:
        return []
    return (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def is_from_dicom(volume_node) -> bool:
    return bool(instance_uids(volume_node))


def copy_series(volume_node, file_for_instance: Callable[[str], str], folder: Path) -> Path:
    """Copy the volume's DICOM files (``file_for_instance``: Slicer's ``dicomDatabase.fileForInstance``)
    into ``folder``, so the engine reads exactly this series."""
    uids = instance_uids(volume_node)
    if not uids:
        raise InputError(f"volume '{volume_node.GetName()}' was not loaded from DICOM; export DICOM SEG "
                         f"needs the series it came from")
    folder.mkdir(parents=True, exist_ok=True)
    for index, uid in enumerate(uids):
        path = file_for_instance(uid)
        if not path or not Path(path).is_file():
            raise InputError(f"the DICOM file of instance {uid} is not in the DICOM database any more; "
                             f"import the series again")
        shutil.copyfile(path, folder / f"{index:05d}.dcm")
    return folder


def dicom_seg_command(python_executable: str | os.PathLike, labelmap: Path, series_folder: Path, output: Path,
                      summary: Path | None = None, edited: list[str] | tuple = ()) -> list[str]:
    command = [os.fspath(python_executable), "-m", "SpineSegDiffLib", "dicom-seg", str(labelmap),
               str(series_folder), "--output", str(output)]
    if summary is not None:
        command += ["--summary", str(summary)]
    for key in edited:
        command += ["--edited", key]
    return command


def export_dicom_seg(segmentations_logic, segmentation_node, volume_node, output: str | os.PathLike,
                     file_for_instance: Callable[[str], str], python_executable: str | os.PathLike,
                     engine_dir: str | os.PathLike, timeout: float = SEG_TIMEOUT_S) -> Path:
    """Write the segmentation as DICOM SEG at ``output``; edited structures are SEMIAUTOMATIC.
    Raises InputError / RuntimeError with one line; nothing is left behind on failure."""
    if segmentation_node is None or volume_node is None:
        raise InputError("select both the segmentation and the DICOM volume it belongs to")
    values = structure_segment_values(segmentation_node)
    if not values:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no spinal canal, vertebrae or discs segment")
    labels = labelmaps.label_array(segmentations_logic, segmentation_node, volume_node, values)
    output = Path(output)
    work = Path(tempfile.mkdtemp(prefix="SpineSegDiff-seg-"))
    try:
        series = copy_series(volume_node, file_for_instance, work / "series")
        label = sitk.GetImageFromArray(labels)
        label.CopyInformation(volumes.sitk_from_node(volume_node))
        sitk.WriteImage(label, str(work / "labels.nrrd"), useCompression=True)
        summary = None
        if segmentation_node.GetAttribute(node_tags.SUMMARY_JSON):
            summary = work / "summary.json"
            summary.write_text(segmentation_node.GetAttribute(node_tags.SUMMARY_JSON), encoding="utf-8")
        command = dicom_seg_command(python_executable, work / "labels.nrrd", series, output, summary,
                                    edited_structures(segmentation_node, labels))
        ended = []
        process = EngineProcess(command, on_progress=lambda record: None, on_finished=ended.append,
                                env=python_environment(engine_dir), cwd=str(work))
        process.start()
        process.wait_or_cancel(timeout, "writing the DICOM SEG")
        if not ended or not ended[0].ok:
            message = ended[0].message if ended else "no result"
            raise RuntimeError(f"could not write the DICOM SEG: {message}")
        return output
    finally:
        shutil.rmtree(work, ignore_errors=True)
