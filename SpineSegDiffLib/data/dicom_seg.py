"""Write the segmentation as a DICOM Segmentation object (highdicom) that refers to its source series.

One segment per structure, coded with the engine's label table (core/labels.py), the
algorithm identified (SpineSegDiff, engine version, model id and version) and
SegmentAlgorithmType AUTOMATIC. The SEG shares the source series' Frame of Reference and
Study, and each frame refers to the source image it segments, so a PACS viewer overlays
it on the series it came from. Only possible when the input was a DICOM series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES, Structure
from SpineSegDiffLib.data.imageio import same_geometry

ALGORITHM_NAME = "SpineSegDiff"
SEG_SERIES_NUMBER = 900  # after the scanner's series in a viewer's list
DICOM_SEG_SUFFIXES = (".dcm",)


def check_dicom_seg_path(path: Path, input_is_dicom: bool, option: str = "--output-dicom-seg") -> None:
    """Fail before any work: SEG needs a DICOM input, and a file name (not a folder)."""
    if not input_is_dicom:
        raise InputError(f"{option} {path}: a DICOM output needs a DICOM series as input (its study, "
                         f"frame of reference and images are referenced); give the series folder")
    if path.exists() and path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name such as seg.dcm")


def _coded(code: tuple[str, str, str]):
    from highdicom.sr.coding import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def algorithm_identification(model_identity: dict, settings: dict | None = None):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    model = f"{model_identity.get('id') or 'model'} {model_identity.get('version') or ''}".strip()
    parameters = {"model": model[:64]}
    for key in ("samples", "steps", "seed"):
        if settings and settings.get(key) is not None:
            parameters[key] = str(settings[key])
    return AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence,
        version=f"{__version__} (model {model})"[:64], parameters=parameters)


def segment_descriptions(algorithm, edited: frozenset[str] = frozenset()) -> list:
    """One description per structure; a structure a person corrected (its key in ``edited``)
    is SEMIAUTOMATIC, as DICOM defines it (automatic, then edited by a user)."""
    from highdicom.color import CIELabColor
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription

    def description(s: Structure):
        rgb = tuple(int(round(255 * c)) for c in s.color)
        kind = (SegmentAlgorithmTypeValues.SEMIAUTOMATIC if s.key in edited
                else SegmentAlgorithmTypeValues.AUTOMATIC)
        return SegmentDescription(
            segment_number=s.value, segment_label=s.name,
            segmented_property_category=_coded(s.category), segmented_property_type=_coded(s.type),
            algorithm_type=kind, algorithm_identification=algorithm,
            display_color=CIELabColor.from_rgb(*rgb))

    return [description(s) for s in STRUCTURES]


def write_dicom_seg(labelmap: sitk.Image, source_image: sitk.Image, source_datasets: list,
                    path: str | Path, model_identity: dict, settings: dict | None = None,
                    edited: frozenset[str] = frozenset()) -> None:
    """``labelmap`` (values = segment numbers) on ``source_image``'s grid, whose slice k is
    ``source_datasets[k]``, written to ``path`` as a binary DICOM SEG; structures whose key is in
    ``edited`` are marked SEMIAUTOMATIC."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    ok, why = same_geometry(labelmap, source_image)
    if not ok:  # the pipeline guarantees this; a mismatch would mis-place every frame
        raise InputError(f"cannot write DICOM SEG {path}: the segmentation is not on the series' grid ({why})")
    voxels = sitk.GetArrayViewFromImage(labelmap).astype(np.uint8)  # (slice, row, column)
    if voxels.shape[0] != len(source_datasets):
        raise InputError(f"cannot write DICOM SEG {path}: {voxels.shape[0]} slices for "
                         f"{len(source_datasets)} source images")
    algorithm = algorithm_identification(model_identity, settings)
    seg = hd.seg.Segmentation(
        source_images=source_datasets, pixel_array=voxels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(algorithm, frozenset(edited)),
        series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=ALGORITHM_NAME, manufacturer_model_name=ALGORITHM_NAME,
        software_versions=__version__, device_serial_number="none",
        series_description="SpineSegDiff segmentation (automatic)",
        content_description="Lumbar spine: spinal canal, vertebrae, intervertebral discs",
        content_label="SPINESEGDIFF",
        omit_empty_frames=False)  # every source image gets its frame: simple, exact references
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)


def labelmap_on_grid(labelmap: sitk.Image, grid: sitk.Image, tol: float = 1e-3) -> sitk.Image:
    """``labelmap`` re-indexed onto ``grid`` when both hold the same voxel centres, only with axes
    permuted or reversed (another reader's slice order); any other difference is refused,
    because resampling would change what the person segmented."""
    ok, _ = same_geometry(labelmap, grid)
    if ok:
        return labelmap
    # continuous labelmap index of each grid index: must be a signed permutation + integer shift
    def index_to_point(image: sitk.Image) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = np.asarray(image.GetDirection(), float).reshape(3, 3) @ np.diag(image.GetSpacing())
        m[:3, 3] = image.GetOrigin()
        return m

    grid_to_label = np.linalg.inv(index_to_point(labelmap)) @ index_to_point(grid)
    linear, shift = grid_to_label[:3, :3], grid_to_label[:3, 3]
    lattice = (np.all(np.abs(linear - np.round(linear)) < tol) and np.all(np.abs(shift - np.round(shift)) < tol)
               and sorted(np.abs(np.round(linear)).sum(axis=0).tolist()) == [1, 1, 1])
    size = np.array(grid.GetSize())
    corners = [linear @ (np.array(c) * (size - 1)) + shift for c in np.ndindex(2, 2, 2)]
    inside = all(np.all(np.round(c) >= 0) and np.all(np.round(c) < np.array(labelmap.GetSize())) for c in corners)
    same_count = int(np.prod(size)) == int(np.prod(labelmap.GetSize()))
    if not (lattice and inside and same_count):
        _, why = same_geometry(labelmap, grid)
        raise InputError(f"the labelmap is not on the DICOM series' voxel grid ({why}); export it on the "
                         f"series' own volume")
    return sitk.Resample(labelmap, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labelmap.GetPixelID())
