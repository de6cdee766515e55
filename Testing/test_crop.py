"""Cropping the ensemble to the spine (--crop auto|slices|off): the box on a synthetic mask,
sampling only the box, outputs on the input's exact geometry, models without a presegmenter,
cache keys, and the CLI switch (real models, real files, real subprocesses)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from SpineSegDiffLib.grid.crop import CropBox, spine_box

DEMO_MODEL = REPO / "SpineSegDiffLib" / "resources" / "models" / "spinesegdiff-demo.zip"
MULTIPLE = 16


def _mask(shape, slices, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[slices[0]:slices[1], rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def _check_fits(box_range, extent, pad, length):
    low, high = box_range
    assert low % MULTIPLE == 0 and (high - low) % MULTIPLE == 0  # whole tiles of the U-Net
    assert 0 <= low and high <= length
    # holds the extent plus the margin, as far as the grid goes
    assert low <= max(0, extent[0] - pad) and high >= min(length, extent[1] + pad)
    # and no more than one tile wider on either side
    assert low > extent[0] - pad - MULTIPLE and high < extent[1] + pad + MULTIPLE


def test_box_holds_the_mask_plus_margin_on_whole_tiles():
    shape, slices, rows, cols = (20, 160, 160), (7, 12), (41, 99), (70, 93)
    pixel_mm, slice_mm, margin_mm, slice_margin_mm = 2.0, 3.5, 20.0, 8.0
    box = spine_box(_mask(shape, slices, rows, cols), pixel_mm, slice_mm, margin_mm, slice_margin_mm, MULTIPLE)
    pad, slice_pad = math.ceil(margin_mm / pixel_mm), math.ceil(slice_margin_mm / slice_mm)
    assert box.slices == (slices[0] - slice_pad, slices[1] + slice_pad)
    _check_fits(box.rows, rows, pad, shape[1])
    _check_fits(box.cols, cols, pad, shape[2])
    assert box.full == shape and 0 < box.pixel_fraction < 1 and not box.is_whole
    cut = box.cut(np.zeros((shape[0], 3, *shape[1:])))
    assert cut.shape == (box.shape[0], 3, *box.shape[1:])


def test_box_is_clamped_at_the_grid_edges_and_whole_when_the_margin_reaches_past_them():
    shape = (9, 128, 96)
    edge = spine_box(_mask(shape, (0, 2), (0, 10), (90, 96)), 1.0, 4.0, 5.0, 1.0, MULTIPLE)
    assert edge.slices == (0, 3) and edge.rows[0] == 0 and edge.cols[1] == shape[2]
    _check_fits(edge.rows, (0, 10), 5, shape[1])
    _check_fits(edge.cols, (90, 96), 5, shape[2])
    wide = spine_box(_mask(shape, (3, 5), (60, 70), (40, 50)), 1.0, 4.0, 200.0, 1.0, MULTIPLE)
    assert wide.rows == (0, shape[1]) and wide.cols == (0, shape[2])
    assert spine_box(np.zeros(shape, bool), 1.0, 4.0, 5.0, 1.0, MULTIPLE) is None


def test_slices_only_box_keeps_whole_slices_and_leaves_lateral_ones_out():
    shape, slices = (30, 64, 64), (11, 17)
    box = spine_box(_mask(shape, slices, (20, 30), (20, 30)), 2.0, 2.0, 10.0, 4.0, MULTIPLE, in_plane=False)
    assert box.rows == (0, shape[1]) and box.cols == (0, shape[2])
    assert box.slices == (slices[0] - 2, slices[1] + 2) and box.shape[0] < shape[0]
    assert box.pixel_fraction == pytest.approx(box.shape[0] / shape[0])


def test_sampling_a_box_of_slices_gives_the_uncropped_values_there_and_background_elsewhere(tiny_model):
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import predict_on_grid
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(tiny_model, "cpu")
    size = model.grid_spec.size
    slices = np.random.default_rng(3).random((7, size, size), dtype=np.float32)
    settings = SegmentSettings(samples=2, steps=2, extras=True)
    whole = predict_on_grid(model, slices, settings)
    box = CropBox((2, 5), (0, size), (0, size), slices.shape)
    kept = predict_on_grid(model, slices, settings, box=box)
    assert kept.probabilities.shape == whole.probabilities.shape
    assert kept.network_evaluations * slices.shape[0] == whole.network_evaluations * box.shape[0]
    for name in ("probabilities", "entropy", "variance", "mutual_information"):
        got, expected = getattr(kept, name), getattr(whole, name)
        np.testing.assert_array_equal(got[2:5], expected[2:5], err_msg=name)
        assert not got[:2].any() and not got[5:].any(), name  # skipped: background, uncertainty 0
    in_plane = CropBox((1, 6), (MULTIPLE, size - MULTIPLE), (0, 2 * MULTIPLE), slices.shape)
    part = predict_on_grid(model, slices, settings, box=in_plane)
    outside = np.ones(slices.shape, bool)
    outside[1:6, MULTIPLE:size - MULTIPLE, :2 * MULTIPLE] = False
    assert not part.entropy.transpose(1, 0, 2, 3)[:, outside].any()
    assert part.entropy[1:6, :, MULTIPLE:size - MULTIPLE, :2 * MULTIPLE].any()


def test_model_without_presegmenter_runs_uncropped_with_a_note(tiny_model, phantom_image):
    from SpineSegDiffLib.data.imageio import read_image
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(tiny_model, "cpu")
    assert "presegmentation" not in model.metadata
    image = read_image(phantom_image)
    results = {crop: segment_image(image, model, SegmentSettings(samples=1, steps=2, crop=crop))
               for crop in ("auto", "off")}
    crop = results["auto"].summary["settings"]["crop"]
    assert crop["applied"] is False and crop["reason"] == "no presegmenter"
    assert any("no presegmenter" in note for note in results["auto"].summary["notes"])
    assert results["auto"].summary["presegmentation_evaluations"] == 0
    for a, b in zip(results["auto"].probabilities, results["off"].probabilities):
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def test_cache_keys_tell_crops_apart(tiny_model, phantom_folder, tmp_path):
    from SpineSegDiffLib.data.imageio import read_image
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.presegmentation import SamplingStart
    from SpineSegDiffLib.inference.request_index import request_key
    from SpineSegDiffLib.inference.sample_cache_key import open_sample_cache
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(tiny_model, "cpu")
    image = read_image(min((phantom_folder / "images").glob("*_t2.mha")))
    grid = to_model_grid(image, model.grid_spec)
    n, h, w = grid.slices.shape
    settings = SegmentSettings(samples=1, steps=2, cache=True, cache_dir=tmp_path)
    start = SamplingStart("noise", None)
    boxes = [None, CropBox((1, n - 1), (0, h), (0, w), (n, h, w)), CropBox((0, n), (0, h), (0, w - 16), (n, h, w))]
    folders = {open_sample_cache(image, grid, model, settings, 2, start, box).folder for box in boxes}
    assert len(folders) == len(boxes)
    keys = {request_key(image, tiny_model, SegmentSettings(samples=1, steps=2, crop=crop, crop_margin_mm=margin),
                        2, start, "cpu")
            for crop, margin in (("off", 20.0), ("auto", 20.0), ("auto", 30.0), ("slices", 20.0))}
    assert len(keys) == 4


@pytest.fixture(scope="module")
def phantom_image(tmp_path_factory) -> Path:
    """An unseen phantom at a coarser in-plane spacing (a faster test), on a flipped, shifted
    geometry: what a crop must map back exactly."""
    from SpineSegDiffLib.data.phantom import generate_case

    image = generate_case(seed=1001, index=0, sequences=("t2",)).images["t2"]
    coarse = [image.GetSpacing()[0], 2 * image.GetSpacing()[1], 2 * image.GetSpacing()[2]]
    size = [image.GetSize()[0], image.GetSize()[1] // 2, image.GetSize()[2] // 2]
    direction = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag([1.0, 1.0, -1.0])
    out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), coarse,
                        image.GetDirection(), 0.0, image.GetPixelID())
    out.SetDirection(direction.ravel().tolist())
    out.SetOrigin(tuple(np.asarray(out.GetOrigin()) + (3.25, -7.5, 11.0)))
    path = tmp_path_factory.mktemp("phantom") / "phantom_t2.mha"
    sitk.WriteImage(out, str(path))
    return path


def test_choose_crop_leaves_out_the_slices_without_spine_and_says_what_it_kept(phantom_image):
    from SpineSegDiffLib.data.imageio import read_image
    from SpineSegDiffLib.grid.geometry import to_model_grid
    from SpineSegDiffLib.inference.cropping import CROP_SLICE_MARGIN_MM, choose_crop
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = ModelInfo.read(DEMO_MODEL)  # torch-free: what decides the crop needs no weights
    grid = to_model_grid(read_image(phantom_image), model.grid_spec)
    n, h, w = grid.slices.shape
    presegmentation = np.zeros((n, 3, h, w), np.float32)
    presegmentation[n // 2, 1, h // 3:h // 2, w // 3:w // 2] = 0.9  # the spine in the middle slice only
    slice_pad = math.ceil(CROP_SLICE_MARGIN_MM / grid.grid_image.GetSpacing()[2])
    assert 2 * slice_pad + 1 < n  # the phantom is wide enough for lateral slices to go
    kept = (n // 2 - slice_pad, n // 2 + slice_pad + 1)
    for crop in ("slices", "auto"):
        box, record, notes = choose_crop(model, SegmentSettings(crop=crop), grid, presegmentation)
        assert box.slices == kept and record["slices"] == list(kept) and record["applied"] and notes == []
        assert record["slices_kept"] == kept[1] - kept[0] and record["pixel_fraction"] == box.pixel_fraction
        assert (box.rows == (0, h) and box.cols == (0, w)) == (crop == "slices")
    box, record, notes = choose_crop(model, SegmentSettings(crop="auto"), grid, np.zeros_like(presegmentation))
    assert box is None and record["reason"] == "empty presegmentation" and len(notes) == 1
    assert choose_crop(model, SegmentSettings(crop="off"), grid, presegmentation)[:2] == \
        (None, {"setting": "off", "applied": False})


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()
            and a.GetDirection() == b.GetDirection())


def test_a_crop_comes_back_on_the_input_geometry_as_full_size_outputs(phantom_image):
    from SpineSegDiffLib.data.imageio import read_image
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    model = load_model(DEMO_MODEL, "cpu")
    image = read_image(phantom_image)
    results = {crop: segment_image(image, model, SegmentSettings(samples=1, steps=1, crop=crop, extras=True))
               for crop in ("off", "auto")}
    off, auto = results["off"], results["auto"]
    assert off.summary["settings"]["crop"] == {"setting": "off", "applied": False}
    record = auto.summary["settings"]["crop"]
    assert record["applied"] and record["pixel_fraction"] < 1  # the bundled presegmenter finds the spine
    assert auto.summary["presegmentation_evaluations"] == off.summary["settings"]["grid"]["slices"]
    images = [auto.labelmap, auto.uncertainty, *auto.probabilities, *auto.structure_uncertainty,
              *auto.extras["variance"], *auto.extras["mutual_information"]]
    references = [off.labelmap, off.uncertainty, *off.probabilities, *off.structure_uncertainty,
                  *off.extras["variance"], *off.extras["mutual_information"]]
    assert len(images) == len(references)
    for got, expected in zip(images, references):
        assert _same_geometry(got, image) and got.GetPixelID() == expected.GetPixelID()
        assert got.GetNumberOfComponentsPerPixel() == expected.GetNumberOfComponentsPerPixel()
    assert sitk.GetArrayViewFromImage(auto.labelmap).any()


def test_cli_crop_switch_and_its_errors(cli, tmp_path, phantom_image):
    seg, summary = tmp_path / "seg.mha", tmp_path / "summary.json"
    done = cli("segment", phantom_image, "--model", DEMO_MODEL, "--samples", "1", "--steps", "1",
               "--crop", "auto", "--crop-margin", "30", "--no-cache",
               "--output-segmentation", seg, "--output-summary", summary)
    assert done.returncode == 0, done.stderr
    assert _same_geometry(sitk.ReadImage(str(seg)), sitk.ReadImage(str(phantom_image)))
    record = json.loads(summary.read_text())["settings"]["crop"]
    assert record["setting"] == "auto" and record["applied"] and record["margin_mm"] == 30
    assert f"{record['slices_kept']} of {record['grid_shape'][0]} slices" in done.stdout
    bad = cli("segment", phantom_image, "--crop-margin", "-1", "--output-segmentation", tmp_path / "x.nii.gz")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --crop-margin")
    assert not (tmp_path / "x.nii.gz").exists()
    wrong = cli("segment", phantom_image, "--crop", "everything", "--output-segmentation", tmp_path / "y.nii.gz")
    assert wrong.returncode == 2 and "--crop" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_cached_crop_is_served_to_the_same_crop_only(phantom_image, tmp_path):
    from SpineSegDiffLib.data.imageio import read_image
    from SpineSegDiffLib.inference.cached_run import segment_from_cache
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.model_info import ModelInfo
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    image = read_image(phantom_image)

    def settings(crop):
        return SegmentSettings(samples=1, steps=1, crop=crop, cache=True, cache_dir=tmp_path)

    fresh = segment_image(image, load_model(DEMO_MODEL, "cpu"), settings("auto"))
    info = ModelInfo.read(DEMO_MODEL)
    again = segment_from_cache(image, info, settings("auto"), "cpu")
    assert again is not None and again.summary["settings"]["crop"] == fresh.summary["settings"]["crop"]
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(again.labelmap),
                                  sitk.GetArrayViewFromImage(fresh.labelmap))
    assert segment_from_cache(image, info, settings("off"), "cpu") is None  # never the cropped samples
    assert segment_from_cache(image, info, settings("slices"), "cpu") is None
