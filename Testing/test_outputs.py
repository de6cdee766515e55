"""data.outputs: output formats by extension, the Slicer segmentation file, path checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES, TERMINOLOGY_CONTEXT
from SpineSegDiffLib.data.outputs import (check_output_paths, ijk_to_lps, segmentation_format, write_float_image,
                                          write_segmentation, write_stack, write_summary)


def _labelmap() -> sitk.Image:
    labels = np.zeros((4, 6, 5), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[0, 4:, :] = 2
    labels[3, :2, 3:] = 3
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((0.7, 0.8, 3.5))
    image.SetOrigin((10.0, -5.0, 2.5))
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    return image


@pytest.mark.parametrize("name, kind", [("a.seg.nrrd", "seg.nrrd"), ("a.SEG.NRRD", "seg.nrrd"),
                                        ("a.nii.gz", "labelmap"), ("a.nrrd", "labelmap"), ("a.mha", "labelmap")])
def test_segmentation_format_by_extension(name, kind):
    assert segmentation_format(name) == kind


def test_an_unsupported_extension_is_a_clear_error():
    with pytest.raises(InputError, match="a.png"):
        segmentation_format("a.png")


def test_ijk_to_lps_maps_indices_to_physical_points():
    image = _labelmap()
    matrix = ijk_to_lps(image)
    for index in ((0, 0, 0), (4, 5, 3), (2, 1, 0)):
        np.testing.assert_allclose((matrix @ [*index, 1])[:3], image.TransformIndexToPhysicalPoint(index))


def test_seg_nrrd_holds_named_coloured_segments_with_terminology(tmp_path):
    image = _labelmap()
    write_segmentation(image, tmp_path / "s.seg.nrrd")
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    assert [s["id"] for s in seg["segments"]] == [s.key for s in STRUCTURES]
    assert [s["name"] for s in seg["segments"]] == [s.name for s in STRUCTURES]
    for segment, structure in zip(seg["segments"], STRUCTURES):
        assert segment["terminology"]["contextName"] == TERMINOLOGY_CONTEXT
        assert segment["terminology"]["type"] == list(structure.type)
    labels_ijk = slicerio.extract_segments(seg, [(s.name, s.value) for s in STRUCTURES])["voxels"]
    np.testing.assert_array_equal(np.transpose(labels_ijk, (2, 1, 0)), sitk.GetArrayFromImage(image))
    assert [p.name for p in tmp_path.iterdir()] == ["s.seg.nrrd"]  # no temporary file left


def test_labelmaps_and_float_maps_keep_the_geometry(tmp_path):
    image = _labelmap()
    write_segmentation(sitk.Cast(image, sitk.sitkInt16), tmp_path / "l.nii.gz")
    back = sitk.ReadImage(str(tmp_path / "l.nii.gz"))
    assert back.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    write_float_image(image, tmp_path / "f.nrrd")
    assert sitk.ReadImage(str(tmp_path / "f.nrrd")).GetPixelID() == sitk.sitkFloat32
    write_stack([image, image, image], tmp_path / "stack.nrrd")
    stack = sitk.ReadImage(str(tmp_path / "stack.nrrd"))
    assert stack.GetNumberOfComponentsPerPixel() == 3 and stack.GetSize() == image.GetSize()


def test_summary_is_indented_json(tmp_path):
    write_summary({"version": 1, "structures": {}}, tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text) == {"version": 1, "structures": {}} and text.endswith("\n") and "\n  " in text


def test_output_paths_are_checked_before_any_work(tmp_path):
    check_output_paths({"segmentation": tmp_path / "new" / "a.nii.gz", "uncertainty": None,
                        "probabilities": tmp_path / "b.nii.gz"})
    assert (tmp_path / "new").is_dir()
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="both write"):
        check_output_paths({"segmentation": tmp_path / "a.nii.gz",
                            "uncertainty": tmp_path / "x" / ".." / "a.nii.gz"})
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_paths({"segmentation": tmp_path / "folder.nii.gz"})
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create the output folder"):
        check_output_paths({"segmentation": tmp_path / "file" / "a.nii.gz"})
