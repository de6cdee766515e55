"""Reading, checking and writing images: formats, bad input, label geometry, atomic writes."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.data.imageio import (MAX_VOXELS, SUPPORTED_EXTENSIONS, geometry_of, image_extension,
                                     read_image, read_label, read_mri, same_geometry, write_image)


def small_mri(size=(20, 24, 6), spacing=(0.9, 0.8, 4.0), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(300, 40, size[::-1]).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, 300.0))
    image.SetDirection((1, 0, 0, 0, 0.96592583, -0.25881905, 0, 0.25881905, 0.96592583))  # 15 deg
    return image


def labels_like(image: sitk.Image, pixel_type=sitk.sitkUInt8) -> sitk.Image:
    values = (sitk.GetArrayFromImage(image) > 300).astype(np.uint8) * 3
    label = sitk.Cast(sitk.GetImageFromArray(values), pixel_type)
    label.CopyInformation(image)
    return label


def from_array(values: np.ndarray, like: sitk.Image | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    if like is not None:
        image.CopyInformation(like)
    return image


def refused(call, *args) -> str:
    """The InputError message of ``call(*args)``; it must be a single line."""
    with pytest.raises(InputError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_write_then_read_keeps_values_and_geometry(tmp_path, ext):
    image = small_mri()
    path = tmp_path / f"case{ext}"
    write_image(image, path)
    back = read_mri(path)
    assert same_geometry(back, image, tol=1e-6) == (True, "")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    expected_files = {"case.mhd", "case.zraw"} if ext == ".mhd" else {path.name}
    assert {p.name for p in tmp_path.iterdir()} == expected_files  # no temporary left behind


def test_image_extension_is_compound_aware():
    assert image_extension("a/b/Case.NII.GZ") == ".nii.gz"
    assert image_extension("seg.seg.nrrd") == ".nrrd"
    assert image_extension("x.mha") == ".mha"
    message = refused(image_extension, "scan.png")
    assert "scan.png" in message and all(ext in message for ext in SUPPORTED_EXTENSIONS)
    refused(image_extension, "scan.gz")


# ---------------------------------------------------------------- bad input


def test_missing_folder_and_unsupported_files_are_refused(tmp_path):
    assert "not found" in refused(read_mri, tmp_path / "nope.nii.gz")
    (tmp_path / "dir.nii.gz").mkdir()
    assert "folder" in refused(read_mri, tmp_path / "dir.nii.gz")
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkUInt8), str(png))
    message = refused(read_mri, png)
    assert str(png) in message and "unsupported" in message


@pytest.mark.parametrize("name", ["garbage.mha", "garbage.nii.gz", "garbage.nrrd"])
def test_corrupt_file_is_refused_with_its_name(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    message = refused(read_mri, path)
    assert str(path) in message and "cannot read" in message


def test_truncated_data_is_refused(tmp_path):
    path = tmp_path / "cut.mha"
    sitk.WriteImage(small_mri(), str(path), useCompression=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # header intact, pixels short
    assert str(path) in refused(read_mri, path)


def test_absurd_size_is_refused_from_the_header_before_reading_pixels(tmp_path):
    # the header claims 10^15 voxels and points at a data file that does not exist: a
    # reader that allocated or read pixels would fail differently (memory / missing file)
    path = tmp_path / "huge.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                    "ElementSpacing = 1 1 1\nElementType = MET_FLOAT\nElementDataFile = missing.raw\n")
    message = refused(read_mri, path)
    assert str(path) in message and f"{MAX_VOXELS:,}" in message and "100000x100000x100000" in message

    just_over = round(MAX_VOXELS ** (1 / 3)) + 1
    path.write_text(path.read_text().replace("100000 100000 100000", f"{just_over} {just_over} {just_over}"))
    assert "limit" in refused(read_mri, path)
    small = tmp_path / "small.mha"
    small.write_text(path.read_text().replace(f"{just_over} {just_over} {just_over}", "32 32 4"))
    message = refused(read_mri, small)  # a sane size gets as far as the (missing) data file
    assert str(small) in message and "limit" not in message


@pytest.mark.parametrize("dimension, size", [(2, (32, 32)), (4, (20, 20, 5, 3))])
def test_not_3d_is_refused(tmp_path, dimension, size):
    path = tmp_path / f"{dimension}d.nii.gz"
    rng = np.random.default_rng(0)
    if dimension == 2:
        image = from_array(rng.random(size[::-1]).astype(np.float32))
    else:  # a time series of 3D volumes (numpy 4D would become a vector image)
        image = sitk.JoinSeries([from_array(rng.random(size[2::-1]).astype(np.float32)) for _ in range(size[3])])
    assert image.GetDimension() == dimension
    sitk.WriteImage(image, str(path))
    message = refused(read_mri, path)
    assert f"is {dimension}D; SpineSegDiff needs a 3D MRI volume" in message and str(path) in message


@pytest.mark.parametrize("value", [0, 7])
def test_constant_volume_is_refused(tmp_path, value):
    path = tmp_path / "flat.nrrd"
    write_image(from_array(np.full((6, 24, 20), value, np.int16), small_mri()), path)
    assert f"{path} is constant (all voxels = {value}): not an MRI" in refused(read_mri, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_counted(tmp_path, bad):
    values = sitk.GetArrayFromImage(small_mri())
    values.ravel()[[3, 50, 700]] = bad
    path = tmp_path / "nonfinite.mha"
    write_image(from_array(values, small_mri()), path)
    message = refused(read_mri, path)
    assert "3 voxels that are not finite" in message
    assert ("3 NaN" in message) == bool(np.isnan(bad)) and ("3 Inf" in message) == bool(np.isinf(bad))


def test_tiny_vector_and_zero_spacing_images_are_refused(tmp_path):
    tiny = tmp_path / "tiny.mha"
    write_image(from_array(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)), tiny)
    assert "8x8x8" in refused(read_mri, tiny)

    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 32, 32, 3), np.uint8), isVector=True), str(rgb))
    assert "3 components" in refused(read_mri, rgb)

    # SimpleITK refuses to set a zero spacing, so edit a written header instead
    flat = tmp_path / "flat_header.mha"
    sitk.WriteImage(small_mri(), str(flat))
    header, data = flat.read_bytes().split(b"ElementDataFile = LOCAL\n", 1)
    header = re.sub(rb"ElementSpacing = .*", b"ElementSpacing = 0.9 0 4", header)
    flat.write_bytes(header + b"ElementDataFile = LOCAL\n" + data)
    assert "spacing" in refused(read_mri, flat)


# ---------------------------------------------------------------- labels


def test_label_on_the_image_grid_is_read_as_unsigned_integers(tmp_path):
    image = small_mri()
    float_label = tmp_path / "label.nii.gz"
    write_image(labels_like(image, sitk.sitkFloat32), float_label)  # whole numbers stored as float
    label = read_label(float_label, image, "image.nii.gz")
    assert label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(labels_like(image)))

    wide = tmp_path / "wide.nrrd"
    write_image(from_array(sitk.GetArrayFromImage(labels_like(image)).astype(np.int32) * 100, image), wide)
    assert read_label(wide, image, "image.nii.gz").GetPixelID() == sitk.sitkUInt16


@pytest.mark.parametrize("change, expected", [
    ("size", "label vs image: size 20x24x5 vs 20x24x6"),
    ("spacing", "spacing"),
    ("origin", "shifted by 0.5 mm"),
    ("direction", "direction"),
])
def test_label_geometry_mismatch_names_both_files_and_the_difference(tmp_path, change, expected):
    image = small_mri()
    label = labels_like(image)
    if change == "size":
        label = label[:, :, :5]
    elif change == "spacing":
        label.SetSpacing((0.9, 0.8, 3.0))
    elif change == "origin":
        label.SetOrigin(np.add(image.GetOrigin(), (0.0, 0.3, 0.4)))
    else:
        label.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / "label.nii.gz"
    write_image(label, path)
    message = refused(read_label, path, image, "/data/image.nii.gz")
    assert str(path) in message and "/data/image.nii.gz" in message and expected in message


def test_label_values_must_be_whole_and_non_negative(tmp_path):
    image = small_mri()
    half = tmp_path / "half.nii.gz"
    write_image(from_array(sitk.GetArrayFromImage(labels_like(image)) * np.float32(0.5), image), half)
    assert "non-integer" in refused(read_label, half, image, "image")
    negative = tmp_path / "negative.nrrd"
    write_image(from_array(sitk.GetArrayFromImage(labels_like(image)).astype(np.int16) - 1, image), negative)
    assert "negative" in refused(read_label, negative, image, "image")


def test_same_geometry_tolerates_header_rounding_only():
    image = small_mri()
    rounded = sitk.Image(image)
    rounded.SetOrigin(np.add(image.GetOrigin(), 1e-5))  # float32 header rounding
    assert same_geometry(image, rounded) == (True, "")
    assert same_geometry(geometry_of(image), geometry_of(rounded))[0]
    moved = sitk.Image(image)
    moved.SetOrigin(np.add(image.GetOrigin(), (0.1, 0, 0)))
    ok, why = same_geometry(image, moved)
    assert not ok and "origin" in why


# ---------------------------------------------------------------- atomic writes


def test_failed_write_leaves_the_existing_file_untouched_and_no_temporary(tmp_path):
    path = tmp_path / "result.nii.gz"
    write_image(small_mri(), path)
    before = path.read_bytes()
    unwritable = sitk.Image([8, 8, 8], sitk.sitkLabelUInt8)  # a label map object: no file format takes it
    message = refused(write_image, unwritable, path)
    assert str(path) in message
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["result.nii.gz"]


def test_overwrite_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "result.mha"
    write_image(small_mri(seed=1), path)
    inode_before = path.stat().st_ino
    write_image(small_mri(seed=2), path)
    # a rename puts a new file in place; writing in place would keep the inode
    assert path.stat().st_ino != inode_before
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)),
                                  sitk.GetArrayFromImage(small_mri(seed=2)))
    assert os.listdir(tmp_path) == ["result.mha"]
