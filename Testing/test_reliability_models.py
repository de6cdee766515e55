"""Damaged model weights never load silently: model.json records the weights' SHA-256,
loading verifies it (files without one, like the bundled demo, still load), non-finite
weights are refused, and `models add` never lets an altered file pose as a bundled model."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

import pytest

from reliability_helpers import error_line, files_in, run_main, sha, write_mri
from SpineSegDiffLib.model.registry import resolve_model


def repack(source: Path, target: Path, weights=None, metadata=None) -> Path:
    """A well-formed zip (valid CRCs) holding altered weights and/or metadata."""
    with zipfile.ZipFile(source) as zf:
        meta = json.loads(zf.read("model.json"))
        data = bytearray(zf.read("weights.safetensors"))
    if weights is not None:
        data = weights(data)
    if metadata is not None:
        meta = metadata(meta)
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("model.json", json.dumps(meta))
        zf.writestr("weights.safetensors", bytes(data))
    return target


def flip_a_weight(data: bytearray) -> bytearray:
    data[-5] ^= 0x10  # one bit of the last tensor's last value
    return data


def nan_weights(data: bytearray) -> bytearray:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    start = 8 + length + header[name]["data_offsets"][0]
    data[start:start + 4] = struct.pack("<f", float("nan"))
    return data


def without_checksum(meta: dict) -> dict:
    meta.pop("weights_sha256", None)
    return meta


def test_saved_model_records_the_checksum_of_its_weights(tiny_model):
    with zipfile.ZipFile(tiny_model) as zf:
        meta = json.loads(zf.read("model.json"))
        weights = zf.read("weights.safetensors")
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()


def test_model_file_saved_before_checksums_still_loads(tmp_path):
    """Files written before weights_sha256 existed (1.1.0 and older) load as before."""
    from SpineSegDiffLib.model.modelfile import load_model_file

    bundled = resolve_model("spinesegdiff-demo")
    assert "weights_sha256" in load_model_file(bundled).metadata  # saved by this version
    old = repack(bundled, tmp_path / "old.zip",
                 metadata=lambda m: {k: v for k, v in m.items() if k != "weights_sha256"})
    loaded = load_model_file(old)
    assert "weights_sha256" not in loaded.metadata and loaded.state_dict


def test_altered_weights_are_refused_before_any_work(cli, tiny_model, tmp_path):
    altered = repack(tiny_model, tmp_path / "altered.zip", weights=flip_a_weight)
    scan = write_mri(tmp_path / "scan.nii.gz")
    before = sha(scan)
    out = tmp_path / "out"
    line = error_line(cli("segment", scan, "--model", altered, "--device", "cpu", "--progress", "none",
                          "--output-segmentation", out / "seg.nii.gz"))
    assert "do not match the checksum" in line and str(altered) in line
    assert sha(scan) == before and files_in(out) == set()


@pytest.mark.parametrize("metadata", [None, without_checksum], ids=["with-checksum", "old-file"])
def test_non_finite_weights_are_refused(tiny_model, tmp_path, metadata):
    from SpineSegDiffLib.core.errors import ModelError
    from SpineSegDiffLib.model.modelfile import load_model_file

    def nan_and_rehash(meta: dict) -> dict:  # a file saved with NaN weights: checksum matches
        meta = metadata(meta) if metadata else meta
        if "weights_sha256" in meta:
            with zipfile.ZipFile(tiny_model) as zf:
                meta["weights_sha256"] = hashlib.sha256(nan_weights(bytearray(
                    zf.read("weights.safetensors")))).hexdigest()
        return meta

    bad = repack(tiny_model, tmp_path / "nan.zip", weights=nan_weights, metadata=nan_and_rehash)
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_model_file(bad)


def test_save_model_refuses_non_finite_weights(tmp_path):
    import torch

    from SpineSegDiffLib.core.errors import ModelError
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model

    good = load_model_file(resolve_model("spinesegdiff-demo"))
    state = dict(good.state_dict)
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("inf"))
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_model(tmp_path / "m.zip", state, good.metadata)
    assert files_in(tmp_path) == set()


def test_models_add_refuses_an_altered_file_posing_as_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "cache"))
    demo = resolve_model("spinesegdiff-demo")
    demo_sum = sha(demo)
    # same id and version as the bundled model, different (yet finite, unverifiable) weights
    impostor = repack(demo, tmp_path / "impostor.zip", weights=flip_a_weight, metadata=without_checksum)
    line = error_line(run_main("models", "add", impostor))
    assert "give it a new id or version" in line
    assert not (tmp_path / "cache").exists() or "user_models.json" not in files_in(tmp_path / "cache")
    assert resolve_model("spinesegdiff-demo") == demo and sha(demo) == demo_sum
    # the same file under a new version is a new model, added with a note
    renamed = repack(impostor, tmp_path / "mine.zip", metadata=lambda m: {**m, "version": "9.9.9"})
    r = run_main("models", "add", renamed)
    assert r.returncode == 0 and "now means this version 9.9.9" in r.stdout
    # adding the genuine bundled file changes nothing it resolves to
    assert run_main("models", "add", demo).returncode == 0


def test_train_init_refuses_damaged_weights(tiny_model, tmp_path, phantom_folder):
    altered = repack(tiny_model, tmp_path / "altered.zip", weights=flip_a_weight)
    out = tmp_path / "run"
    line = error_line(run_main("train", phantom_folder, "--out", out, "--init", altered, "--epochs", 1,
                               "--progress", "none", "--device", "cpu"))
    assert "do not match the checksum" in line and not out.exists()

