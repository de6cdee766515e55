"""The on-disk sample cache behind the sample slider: real model, real files, real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.inference.sample_cache import SampleCache, evict, folder_bytes

STEPS = 2


@pytest.fixture(scope="module", autouse=True)
def eager_kernel():
    """Eager PyTorch on the CPU: these tests count network rows with a hook on the PyTorch network's
    last layer (ONNX Runtime, the optional CPU kernel, has its own tests: test_onnx_kernel.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPINESEGDIFF_CPU_KERNEL", "eager")
        yield


@pytest.fixture(scope="module")
def small_image(phantom_folder) -> sitk.Image:
    """A phantom shrunk in-plane, so mapping back onto the input costs little."""
    from SpineSegDiffLib.data.imageio import read_mri

    image = read_mri(sorted((phantom_folder / "images").glob("*_t2.mha"))[0])
    return sitk.Shrink(image, [1, 3, 3]) if image.GetSize()[0] < image.GetSize()[1] else sitk.Shrink(image, [3, 3, 1])


@pytest.fixture(scope="module")
def model(tiny_model):
    from SpineSegDiffLib.inference.loading import load_model

    return load_model(tiny_model, "cpu")


class NetworkCalls:
    """Counts real network evaluations (rows through the denoiser's last layer)."""

    def __init__(self, network):
        self.rows = 0
        self._hook = network.final_conv.register_forward_hook(self._count)

    def _count(self, _module, _inputs, output):
        self.rows += output.shape[0]

    def close(self):
        self._hook.remove()


def segment(image, model, samples: int, cache_dir: Path | None, seed: int = 0):
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    settings = SegmentSettings(samples=samples, steps=STEPS, seed=seed, extras=True,
                               cache=cache_dir is not None, cache_dir=cache_dir)
    calls = NetworkCalls(model.network)
    try:
        result = segment_image(image, model, settings)
    finally:
        calls.close()
    return result, calls.rows


def assert_same_result(a, b) -> None:
    """Bit-identical labelmap, uncertainty, probabilities and extras."""
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a.labelmap), sitk.GetArrayViewFromImage(b.labelmap))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a.uncertainty),
                                  sitk.GetArrayViewFromImage(b.uncertainty))
    for x, y in zip(a.probabilities + a.extras["mutual_information"], b.probabilities + b.extras["mutual_information"]):
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(x), sitk.GetArrayViewFromImage(y))


def test_lowering_reads_the_cache_without_network_and_equals_a_fresh_run(tmp_path, small_image, model):
    cache_dir = tmp_path / "ensembles"
    big, rows = segment(small_image, model, 15, cache_dir)
    n_slices = big.grid.slices.shape[0]
    assert rows == big.summary["network_evaluations"] == 15 * STEPS * n_slices
    assert big.summary["cache"]["samples_from_cache"] == 0
    lowered, rows = segment(small_image, model, 5, cache_dir)
    assert rows == 0 and lowered.summary["network_evaluations"] == 0
    assert lowered.summary["cache"]["samples_from_cache"] == 5
    fresh, rows = segment(small_image, model, 5, None)
    assert rows == 5 * STEPS * n_slices and fresh.summary["cache"]["enabled"] is False
    assert_same_result(lowered, fresh)
    # the 15-sample result really differs from the 5-sample one (the test can fail)
    assert not np.array_equal(sitk.GetArrayViewFromImage(big.uncertainty), sitk.GetArrayViewFromImage(fresh.uncertainty))


def test_raising_draws_only_the_new_samples_and_equals_a_fresh_run(tmp_path, small_image, model):
    cache_dir = tmp_path / "ensembles"
    first, _ = segment(small_image, model, 5, cache_dir)
    n_slices = first.grid.slices.shape[0]
    raised, rows = segment(small_image, model, 8, cache_dir)
    assert rows == raised.summary["network_evaluations"] == 3 * STEPS * n_slices
    assert raised.summary["cache"] == {**raised.summary["cache"], "samples_from_cache": 5, "samples_computed": 3}
    fresh, _ = segment(small_image, model, 8, None)
    assert_same_result(raised, fresh)
    assert len(list(Path(raised.summary["cache"]["folder"]).glob("sample_*.npy"))) == 8


def test_another_input_model_or_seed_never_hits(tmp_path, small_image, model, tiny_model):
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model

    cache_dir = tmp_path / "ensembles"
    segment(small_image, model, 2, cache_dir)
    # the same model file elsewhere: a hit (the key is the file's content, not its path)
    (tmp_path / "copy.zip").write_bytes(Path(tiny_model).read_bytes())
    assert segment(small_image, load_model(tmp_path / "copy.zip", "cpu"), 2, cache_dir)[0] \
        .summary["cache"]["samples_from_cache"] == 2
    voxels = sitk.GetArrayFromImage(small_image)
    voxels[0, 0, 0] += 1  # one voxel
    changed = sitk.GetImageFromArray(voxels)
    changed.CopyInformation(small_image)
    moved = sitk.Image(small_image)
    moved.SetOrigin([o + 0.5 for o in small_image.GetOrigin()])  # same voxels, other place
    for image, seed in ((changed, 0), (moved, 0), (small_image, 1)):
        result, rows = segment(image, model, 2, cache_dir, seed=seed)
        assert result.summary["cache"]["samples_from_cache"] == 0 and rows > 0
    # other weights, same architecture and name: a miss
    original = load_model_file(tiny_model)
    nudged = {k: v + 1e-3 if v.is_floating_point() else v for k, v in original.state_dict.items()}
    save_model(tmp_path / "other.zip", nudged, original.metadata)
    assert segment(small_image, load_model(tmp_path / "other.zip", "cpu"), 2, cache_dir)[0] \
        .summary["cache"]["samples_from_cache"] == 0
    assert len(list(cache_dir.iterdir())) <= 3  # only the last three ensembles are kept


def test_damaged_sample_files_are_recomputed_not_fatal(tmp_path, small_image, model):
    cache_dir = tmp_path / "ensembles"
    reference, _ = segment(small_image, model, 4, cache_dir)
    files = sorted(Path(reference.summary["cache"]["folder"]).glob("sample_*.npy"))
    data = bytearray(files[1].read_bytes())
    data[-10] ^= 0xFF  # a flipped byte in the data: the checksum catches it
    files[1].write_bytes(bytes(data))
    files[3].write_bytes(b"not a numpy file")
    result, rows = segment(small_image, model, 4, cache_dir)
    n_slices = reference.grid.slices.shape[0]
    assert result.summary["cache"]["samples_from_cache"] == 1  # sample 0 only; 1..3 drawn again
    assert rows == 3 * STEPS * n_slices
    assert_same_result(result, reference)


def test_eviction_keeps_the_most_recent_ensembles_within_the_size_limit(tmp_path):
    import os

    shape = (2, 3, 3, 32, 32)
    sample = np.full(shape, 7, np.uint8)
    root = tmp_path / "ensembles"
    for i in range(5):
        cache = SampleCache.open(f"entry{i}", shape, root=root, limit_bytes=10 ** 6, max_entries=3)
        assert cache.store(0, sample)
        os.utime(cache.folder, (1000 + i, 1000 + i))  # distinct, ordered last-use times
    assert sorted(p.name for p in root.iterdir()) == ["entry2", "entry3", "entry4"]
    # using an old entry makes it recent: the next new one evicts entry3 instead
    SampleCache.open("entry2", shape, root=root, limit_bytes=10 ** 6, max_entries=3)
    SampleCache.open("entry5", shape, root=root, limit_bytes=10 ** 6, max_entries=3).store(0, sample)
    assert sorted(p.name for p in root.iterdir()) == ["entry2", "entry4", "entry5"]
    # a size limit of about two and a half samples: older ensembles go, then no more is stored
    limit = int(2.5 * sample.nbytes) + 1024  # + file headers and ensemble.json
    cache = SampleCache.open("big", shape, root=root, limit_bytes=limit, max_entries=3)
    stored = [cache.store(i, sample) for i in range(4)]
    assert stored == [True, True, False, False]
    assert sum(folder_bytes(p) for p in root.iterdir()) <= limit
    assert [p.name for p in root.iterdir()] == ["big"]
    assert len(cache.load_leading(4)) == 2
    assert evict(root, keep=None, limit_bytes=0, max_entries=3) == [root / "big"] and not any(root.iterdir())


def test_cli_reports_cache_use_and_no_cache_disables_it(cli, tmp_path, phantom_folder, tiny_model, monkeypatch):
    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "cache" / "models"))
    image = sorted((phantom_folder / "images").glob("*_t2.mha"))[0]

    def run(samples: int, *extra: str) -> dict:
        summary = tmp_path / f"summary{samples}{len(extra)}.json"
        r = cli("segment", image, "--model", tiny_model, "--samples", samples, "--steps", STEPS,
                "--output-summary", summary, "--progress", "none", "--device", "cpu", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(summary.read_text())

    first = run(3)
    assert first["cache"]["samples_from_cache"] == 0 and first["network_evaluations"] > 0
    assert Path(first["cache"]["folder"]).parent == tmp_path / "cache" / "ensembles"
    second = run(2)
    assert second["cache"]["samples_from_cache"] == 2 and second["network_evaluations"] == 0
    third = run(2, "--no-cache")
    assert third["cache"] == {"enabled": False, "samples_from_cache": 0, "samples_computed": 2, "folder": None}
    assert third["network_evaluations"] > 0
    assert third["structures"] == second["structures"]


def test_fast_pooling_swap_changes_no_output(model):
    """load_model swaps the CPU-slow 2x2 max-pooling layers; outputs stay bit-identical."""
    import torch

    from SpineSegDiffLib.inference.loading import MaxPool2x2
    from SpineSegDiffLib.model.modelfile import build_model, load_model_file

    assert any(isinstance(m, MaxPool2x2) for m in model.network.modules())
    plain = build_model(load_model_file(model.path), "cpu").eval()
    assert not any(isinstance(m, MaxPool2x2) for m in plain.modules())
    image = torch.rand(3, model.image_channels, 64, 64)
    x_t = torch.randn(6, 3, 64, 64)
    with torch.inference_mode():
        expected = plain.denoise(x_t, 500, image, plain.encode(image))
        actual = model.network.denoise(x_t, 500, image, model.network.encode(image))
    assert torch.equal(actual, expected)


def test_sample_groups_keep_cache_and_fresh_runs_identical(tmp_path, small_image, model):
    """With 2 samples per network call (as on a GPU), raising 3 -> 6 draws only what is
    missing in whole groups, and equals a fresh 6-sample run."""
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    def run(samples, cache):
        settings = SegmentSettings(samples=samples, steps=STEPS, samples_per_call=2, cache=cache, extras=True,
                                   cache_dir=tmp_path / "ensembles")
        return segment_image(small_image, model, settings)

    first = run(3, True)
    n_slices = first.grid.slices.shape[0]
    assert first.summary["network_evaluations"] == 4 * STEPS * n_slices  # groups {0,1} {2,3}
    raised = run(6, True)
    assert raised.summary["cache"]["samples_from_cache"] == 4
    assert raised.summary["network_evaluations"] == 2 * STEPS * n_slices
    assert_same_result(raised, run(6, False))
