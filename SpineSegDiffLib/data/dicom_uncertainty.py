"""Write the combined uncertainty map as a DICOM Parametric Map (highdicom.pm) on the source series.

Float32 voxels, 0 (sure) .. 1 (unsure), no units, one frame per source image in the source
series' frame of reference, so a PACS viewer can overlay it like the segmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.dicom_seg import ALGORITHM_NAME
from SpineSegDiffLib.data.imageio import same_geometry

PM_SERIES_NUMBER = 901  # right after the segmentation's series


def write_dicom_uncertainty(uncertainty: sitk.Image, source_image: sitk.Image, source_datasets: list,
                            path: str | Path) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ok, why = same_geometry(uncertainty, source_image)
    if not ok:
        raise InputError(f"cannot write DICOM uncertainty map {path}: not on the series' grid ({why})")
    voxels = np.ascontiguousarray(sitk.GetArrayViewFromImage(uncertainty), dtype=np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="UNCERTAINTY", lut_explanation="SpineSegDiff ensemble uncertainty, 0 sure .. 1 unsure",
        unit=codes.UCUM.NoUnits, value_range=(0.0, 1.0), slope=1.0, intercept=0.0)
    pm = hd.pm.ParametricMap(
        source_images=source_datasets, pixel_array=voxels,
        series_instance_uid=generate_uid(), series_number=PM_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=ALGORITHM_NAME, manufacturer_model_name=ALGORITHM_NAME,
        software_versions=__version__, device_serial_number="none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        series_description="SpineSegDiff uncertainty (automatic)",
        content_label="UNCERTAINTY", content_description="Voxel-wise segmentation uncertainty")
    # General Series' Laterality (type 2C): carried over from the source series, empty if unknown
    pm.Laterality = source_datasets[0].get("Laterality", "")
    with atomic_path(Path(path)) as tmp:
        pm.save_as(tmp)
