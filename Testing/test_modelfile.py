"""Model file (.zip with model.json + weights.safetensors): round trip and every refusal."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.hashing import sha256_file
from SpineSegDiffLib.model import metadata as model_metadata
from SpineSegDiffLib.model.metadata import MODEL_FORMAT_VERSION, labels_metadata, read_metadata
from SpineSegDiffLib.model.modelfile import build_model, check_state_dict_fits, load_model_file, save_model

SMALL_ARCH = {"features": [4, 4, 8, 8, 16, 4], "time_embed_dim": 8}


def make_metadata(**overrides) -> dict:
    metadata = {
        "id": "test-model", "version": "1.2.3", "title": "A test model",
        "architecture": dict(SMALL_ARCH),
        "diffusion": {"train_steps": 1000, "schedule": "cosine"},
        "labels": labels_metadata(),
        "preprocessing": {"grid": {"spacing_mm": 1.0, "size": 64, "min_slice_spacing_mm": 2.0},
                          "normalisation": {"method": "percentile", "low": 0.5, "high": 99.5}},
        "inference_defaults": {"samples": 3, "steps": 5},
        "training": {"cases": 2, "epochs": 1, "seconds": 1.5},
        "metrics": {"dice_mean": 0.5},
    }
    metadata.update(overrides)
    return metadata


def small_state_dict() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"enc.weight": torch.randn(4, 3, 3, 3, generator=gen),
            "enc.bias": torch.randn(4, generator=gen),
            "steps": torch.arange(5, dtype=torch.int64),
            "half": torch.randn(2, 2, generator=gen).to(torch.float16)}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def assert_model_error(path: Path, *words: str):
    with pytest.raises(ModelError) as info:
        load_model_file(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "model.zip"
    save_model(path, small_state_dict(), make_metadata())
    return path


def test_round_trip_keeps_tensors_and_metadata(saved):
    loaded = load_model_file(saved)
    original = small_state_dict()
    assert set(loaded.state_dict) == set(original)
    for name, tensor in original.items():
        assert loaded.state_dict[name].dtype == tensor.dtype
        assert torch.equal(loaded.state_dict[name], tensor)
    expected = make_metadata()
    for key, value in expected.items():
        assert loaded.metadata[key] == value
    assert loaded.metadata["format_version"] == MODEL_FORMAT_VERSION
    assert loaded.metadata["created"]  # filled in by save_model
    assert (loaded.id, loaded.version) == ("test-model", "1.2.3")
    assert read_metadata(saved) == loaded.metadata
    with zipfile.ZipFile(saved) as zf:
        assert sorted(zf.namelist()) == ["model.json", "weights.safetensors"]
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temp file left


def test_sha256_file_matches_hashlib(saved):
    import hashlib

    assert sha256_file(saved) == hashlib.sha256(saved.read_bytes()).hexdigest()


def test_metrics_become_strict_json(tmp_path):
    import numpy as np

    path = tmp_path / "nan.zip"
    save_model(path, small_state_dict(), make_metadata(metrics={
        "dice": {"spinal_canal": float("nan"), "discs": np.float32(0.25)}, "shape": (2, 3)}))
    with zipfile.ZipFile(path) as zf:
        text = zf.read("model.json").decode()
    assert "NaN" not in text
    assert json.loads(text)["metrics"] == {"dice": {"spinal_canal": None, "discs": 0.25},
                                           "shape": [2, 3]}


def test_save_refuses_incomplete_metadata_and_writes_nothing(tmp_path):
    metadata = make_metadata()
    del metadata["preprocessing"]
    with pytest.raises(ModelError, match="preprocessing"):
        save_model(tmp_path / "m.zip", small_state_dict(), metadata)
    with pytest.raises(ModelError, match="inference_defaults.samples"):
        save_model(tmp_path / "m.zip", small_state_dict(),
                   make_metadata(inference_defaults={"samples": 0, "steps": 5}))
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    assert_model_error(tmp_path / "absent.zip", "not found")


def test_not_a_zip(tmp_path):
    path = tmp_path / "notzip.zip"
    path.write_text("hello, I am not a zip file")
    assert_model_error(path, "not a readable model file")


def test_truncated_zip(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert_model_error(cut)


def test_corrupt_weights_fail_crc(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("weights.safetensors")
    # flip bytes in the middle of the stored (uncompressed) weights
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
    bad = tmp_path / "crc.zip"
    bad.write_bytes(bytes(data))
    assert_model_error(bad, "weights.safetensors", "corrupt")


def test_zip_without_weights_still_has_readable_metadata(tmp_path):
    path = write_zip(tmp_path / "noweights.zip", {"model.json": json.dumps(make_metadata(
        format_version=1, created="2025-01-01"))})
    assert read_metadata(path)["id"] == "test-model"
    assert_model_error(path, "weights.safetensors")


def test_zip_without_metadata(tmp_path):
    path = write_zip(tmp_path / "nometa.zip", {"weights.safetensors": b"\0" * 16})
    assert_model_error(path, "model.json")


def test_bad_json(tmp_path):
    path = write_zip(tmp_path / "badjson.zip", {"model.json": b"{not json",
                                                "weights.safetensors": b""})
    assert_model_error(path, "not valid JSON")


def test_newer_format_version(saved, tmp_path):
    metadata = read_metadata(saved)
    metadata["format_version"] = MODEL_FORMAT_VERSION + 1
    with zipfile.ZipFile(saved) as zf:
        weights = zf.read("weights.safetensors")
    path = write_zip(tmp_path / "newer.zip", {"model.json": json.dumps(metadata),
                                              "weights.safetensors": weights})
    assert_model_error(path, "newer SpineSegDiff", "update")
    with pytest.raises(ModelError, match="newer"):
        read_metadata(path)


def test_labels_that_do_not_fit(tmp_path):
    labels = labels_metadata()
    labels[2]["key"] = "sacrum"
    with pytest.raises(ModelError, match="labels"):
        save_model(tmp_path / "x.zip", small_state_dict(), make_metadata(labels=labels))
    path = write_zip(tmp_path / "labels.zip", {
        "model.json": json.dumps(make_metadata(labels=labels, format_version=1, created="x")),
        "weights.safetensors": b""})
    assert_model_error(path, "labels", "do not fit")


class _Boom:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    payloads = {"raw_pickle": pickle.dumps(_Boom(marker))}
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2), "boom": _Boom(marker)}, buffer)  # a torch.save zip
    payloads["torch_save"] = buffer.getvalue()
    for name, payload in payloads.items():
        path = write_zip(tmp_path / f"{name}.zip", {
            "model.json": json.dumps(make_metadata(format_version=1, created="x")),
            "weights.safetensors": payload})
        assert_model_error(path, "not a valid safetensors file")
    assert not marker.exists()


def test_member_claiming_huge_size_is_refused(saved, tmp_path):
    # Rewrite the central directory's "uncompressed size" of the weights to ~4 GiB:
    # the reader must refuse before trying to inflate anything.
    data = bytearray(saved.read_bytes())
    name = b"weights.safetensors"
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(name))
    assert data[central + 46: central + 46 + len(name)] == name
    data[central + 24: central + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(bytes(data))
    assert 0xFFFFFFF0 > model_metadata.MAX_WEIGHTS_BYTES
    assert_model_error(bomb, "claims", "refusing")


def test_check_state_dict_fits_names_the_problems():
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 1))
    expected = module.state_dict()
    check_state_dict_fits(expected, dict(expected), "ok.zip")
    wrong = dict(expected)
    wrong["1.weight"] = torch.zeros(3, 4, 1, 1)
    del wrong["0.bias"]
    wrong["extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelError) as info:
        check_state_dict_fits(expected, wrong, "bad.zip")
    message = str(info.value)
    for part in ("bad.zip", "1 missing (e.g. 0.bias)", "1 unexpected (e.g. extra.weight)",
                 "1.weight: file (3, 4, 1, 1), network (2, 4, 1, 1)"):
        assert part in message


def test_build_model_loads_real_network_strictly(tmp_path):
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig

    torch.manual_seed(0)
    network = DiffUNet(NetworkConfig.from_dict(SMALL_ARCH))
    path = tmp_path / "net.zip"
    save_model(path, network.state_dict(), make_metadata())
    built = build_model(load_model_file(path), "cpu")
    assert not built.training
    for name, tensor in network.state_dict().items():
        assert torch.equal(built.state_dict()[name], tensor)

    # same weights, but model.json describes a wider network: refused, file named
    other = tmp_path / "other.zip"
    save_model(other, network.state_dict(),
               make_metadata(architecture={**SMALL_ARCH, "features": [8, 8, 8, 8, 16, 4]}))
    with pytest.raises(ModelError, match="other.zip.*do not fit"):
        build_model(load_model_file(other), "cpu")
