"""Write a 3-D volume as a DICOM MR image series (one file per slice), with pydicom.

Used to make DICOM test data from the project's phantoms (no downloads) and by users who
want to try the PACS path (`spinesegdiff segment SERIES_FOLDER --output-dicom-seg ...`) on
their own NIfTI/MHA volumes. The series keeps the volume's exact geometry: slice k lies at
origin + k * spacing_z * (third direction column), rows and columns follow the first two
direction columns. DICOM's slice normal is row x column, so a left-handed volume comes
back from a reader with its slices in reverse order: the same voxels at the same places.
Slices are cut across the volume's thickest axis (the acquisition's slice direction).
Intensities are scaled linearly onto 12-bit stored values (0..4095), as
MR scanners store them (MR has no absolute intensity scale; the model normalises per volume).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib.core.atomic import atomic_dir
from SpineSegDiffLib.core.errors import InputError


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what the series is; defaults describe an anonymous phantom."""

    patient_name: str = "Phantom^SpineSegDiff"
    patient_id: str = "PHANTOM"
    series_description: str = "SpineSegDiff phantom T2 sagittal"
    study_uid: str | None = None  # None: a new one
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_number: int = 1


def _slices_last(image: sitk.Image) -> sitk.Image:
    """The volume re-indexed so that its thickest axis (the acquisition's slices) is the third."""
    axis = int(np.argmax(image.GetSpacing()))
    order = [a for a in range(3) if a != axis] + [axis]
    return image if order == [0, 1, 2] else sitk.PermuteAxes(image, order)


def series_grid(image: sitk.Image) -> sitk.Image:
    """``image`` indexed as a DICOM reader will index the written series: the same voxels at the
    same places, slices along the thickest axis, slice normal = row x column (right-handed)."""
    image = _slices_last(image)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    if np.linalg.det(direction) > 0:
        return image
    flipped = sitk.Flip(image, [False, False, True])  # ITK's Flip keeps the physical placement
    return flipped


def _ds(values) -> list:
    from pydicom.valuerep import DSfloat

    # DS holds at most 16 characters: auto_format rounds to what fits (about 1e-13 relative)
    return [DSfloat(float(v), auto_format=True) for v in values]


def _datasets(image: sitk.Image, ident: SeriesIdentity) -> list:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a DICOM MR series needs a 3-D single-channel volume")
    image = _slices_last(image)
    voxels = sitk.GetArrayFromImage(image).astype(np.float64)  # (k, j, i)
    low, high = float(voxels.min()), float(voxels.max())
    scale = 4095.0 / max(high - low, 1e-6)
    stored = np.round((voxels - low) * scale).astype(np.uint16)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing, origin = np.asarray(image.GetSpacing(), float), np.asarray(image.GetOrigin(), float)
    study_uid = ident.study_uid or generate_uid()
    series_uid = ident.series_uid or generate_uid()
    frame_uid = ident.frame_of_reference_uid or generate_uid()
    now = datetime.datetime.now()
    out = []
    for k in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = ident.patient_name, ident.patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer = "MR", "SpineSegDiff"
        ds.SeriesNumber, ds.InstanceNumber = ident.series_number, k + 1
        ds.SeriesDescription = ident.series_description
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.PatientPosition, ds.Laterality = "HFS", ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTrainLength, ds.RepetitionTime, ds.EchoTime = 1, 3000.0, 100.0
        ds.ImagePositionPatient = _ds(origin + k * spacing[2] * direction[:, 2])
        ds.ImageOrientationPatient = _ds(np.concatenate([direction[:, 0], direction[:, 1]]))
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])  # row spacing, column spacing
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        out.append(ds)
    return out


def write_mr_series(image: sitk.Image, folder: str | Path, identity: SeriesIdentity | None = None) -> list[Path]:
    """Write ``image`` as ``folder/IM00001.dcm ...``; the folder appears complete or not at all."""
    folder = Path(folder)
    if folder.exists():
        raise InputError(f"{folder} already exists; give a new folder for the DICOM series")
    datasets = _datasets(image, identity or SeriesIdentity())
    names = [f"IM{k + 1:05d}.dcm" for k in range(len(datasets))]
    with atomic_dir(folder) as tmp:
        for name, ds in zip(names, datasets):
            ds.save_as(tmp / name, enforce_file_format=True)
    return [folder / n for n in names]
