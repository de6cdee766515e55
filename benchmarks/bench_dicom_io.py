"""Time the DICOM path against the file path on a SPIDER-sized volume (18 x 512 x 512).

Reading a DICOM series (tag checks with pydicom + voxels with SimpleITK/GDCM) is compared
with reading the same volume as .mha; writing the DICOM SEG and the uncertainty parametric
map with writing a .seg.nrrd and a .nii.gz, all measured in the same run. Not run by pytest.

    .venv/bin/python benchmarks/bench_dicom_io.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from SpineSegDiffLib.data import outputs  # noqa: E402
from SpineSegDiffLib.data.dicom_input import read_dicom_series  # noqa: E402
from SpineSegDiffLib.data.dicom_seg import write_dicom_seg  # noqa: E402
from SpineSegDiffLib.data.dicom_uncertainty import write_dicom_uncertainty  # noqa: E402
from SpineSegDiffLib.data.dicom_writer import write_mr_series  # noqa: E402
from SpineSegDiffLib.data.imageio import read_mri, write_image  # noqa: E402


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray((rng.random((512, 512, 18)) * 1000).astype(np.float32))
    image.SetSpacing((3.3, 0.6, 0.6))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image(image, tmp / "image.mha")
        write_mr_series(image, tmp / "series")
        series = read_dicom_series(tmp / "series")
        # the outputs lie on the series' grid, as the pipeline's do
        on_series = sitk.GetImageFromArray(
            rng.integers(0, 4, sitk.GetArrayViewFromImage(series.image).shape).astype(np.uint8))
        on_series.CopyInformation(series.image)
        uncertainty = sitk.Cast(on_series, sitk.sitkFloat32) / 3.0
        rows = [
            ("read .mha", _best(lambda: read_mri(tmp / "image.mha"), args.repeats)),
            ("read DICOM series", _best(lambda: read_dicom_series(tmp / "series"), args.repeats)),
            ("write .seg.nrrd", _best(lambda: outputs.write_segmentation(on_series, tmp / "s.seg.nrrd"), args.repeats)),
            ("write DICOM SEG", _best(lambda: write_dicom_seg(on_series, series.image, series.datasets, tmp / "s.dcm",
                                                              {"id": "bench", "version": "0"}), args.repeats)),
            ("write uncertainty .nii.gz", _best(lambda: outputs.write_float_image(uncertainty, tmp / "u.nii.gz"),
                                                args.repeats)),
            ("write uncertainty DICOM PM", _best(lambda: write_dicom_uncertainty(uncertainty, series.image,
                                                                                  series.datasets, tmp / "u.dcm"),
                                                 args.repeats)),
        ]
    print(f"volume {image.GetSize()} (x, y, z), best of {args.repeats}")
    for i, (name, seconds) in enumerate(rows):
        ratio = f"  {seconds / rows[i - 1][1]:.2f}x the line above" if i % 2 else ""
        print(f"  {name:<28} {seconds:7.3f} s{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
