"""Model registry: Models.json validity, verified downloads into the cache, user models."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.model.metadata import labels_metadata, read_metadata
from SpineSegDiffLib.model.modelfile import save_model
from SpineSegDiffLib.model.registry import (ModelEntry, add_user_model, all_models, cache_dir,
                                      load_registry, resolve_model, validate_registry)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(folder))
    return folder


@pytest.fixture
def model_zip(tmp_path) -> Path:
    import torch

    path = tmp_path / "source" / "my-model.zip"
    path.parent.mkdir()
    save_model(path, {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, {
        "id": "my-model", "version": "2.0", "title": "My model",
        "architecture": {}, "diffusion": {}, "labels": labels_metadata(),
        "preprocessing": {"grid": {"spacing_mm": 1.0, "size": 64, "min_slice_spacing_mm": 2.0}},
        "inference_defaults": {"samples": 2, "steps": 3},
        "training": {"data": "two phantoms", "sequences": ["T2"]}})
    return path


def entry_for(url: str, sha256: str, **overrides) -> ModelEntry:
    values = dict(id="remote-model", title="Remote", version="1.0", url=url, sha256=sha256,
                  size_bytes=0, labels=("spinal_canal", "vertebrae", "discs"), modality="MR",
                  sequences=("T2",), training_data="test", license="Apache-2.0",
                  description="served by the test")
    values.update(overrides)
    return ModelEntry(**values)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CountingServer:
    """A real HTTP server on 127.0.0.1 (port chosen by the OS) that counts GET requests."""

    def __init__(self, folder: Path):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(model_zip):
    srv = CountingServer(model_zip.parent)
    yield srv
    srv.close()


def test_bundled_models_json_is_valid():
    entries = load_registry()
    assert entries and all(isinstance(e, ModelEntry) for e in entries)
    demo = next(e for e in entries if e.id == "spinesegdiff-demo")
    assert not demo.is_remote and demo.url == "models/spinesegdiff-demo.zip"
    assert set(demo.labels) == {"spinal_canal", "vertebrae", "discs"}
    assert demo.license == "Apache-2.0" and demo.modality == "MR"


def test_models_json_against_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "SpineSegDiffLib" / "resources" / "Models.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads((REPO / "SpineSegDiffLib" / "resources" / "Models.json").read_text()), schema)


def test_validator_names_the_bad_entry(tmp_path):
    good = json.loads((REPO / "SpineSegDiffLib" / "resources" / "Models.json").read_text())
    entry = good["models"][0]
    cases = [
        ({**entry, "id": "broken"} | {"sha256": "xyz"}, "model 'broken'.*sha256"),
        ({k: v for k, v in entry.items() if k != "license"}, "lacks 'license'"),
        ({**entry, "url": "https://example.org/m.zip", "sha256": ""}, "needs its sha256"),
        ({**entry, "labels": ["sacrum"]}, "labels"),
        ({**entry, "size_bytes": "big"}, "size_bytes"),
        ({**entry, "licence": "MIT"}, "unknown keys"),
    ]
    for bad_entry, pattern in cases:
        with pytest.raises(ModelError, match=pattern):
            validate_registry({"schema_version": 1, "models": [bad_entry]}, "reg.json")
    with pytest.raises(ModelError, match="listed twice"):
        validate_registry({"schema_version": 1, "models": [entry, entry]}, "reg.json")
    with pytest.raises(ModelError, match="newer SpineSegDiff"):
        validate_registry({"schema_version": 99, "models": []}, "reg.json")
    bad_json = tmp_path / "Models.json"
    bad_json.write_text("{oops")
    with pytest.raises(ModelError, match="Models.json is not valid JSON"):
        load_registry(bad_json)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SPINESEGDIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "spinesegdiff" / "models"


def test_http_download_verified_then_reused(server, model_zip, private_cache):
    entry = entry_for(f"{server.url}/{model_zip.name}", sha(model_zip))
    seen = []
    path = resolve_model(entry, progress=lambda done, total: seen.append((done, total)))
    assert path == private_cache / "remote-model-1.0.zip"
    assert path.read_bytes() == model_zip.read_bytes()
    assert seen[-1] == (model_zip.stat().st_size, model_zip.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(server.hits) == 1
    # second call: the verified cached copy is used, no request reaches the server
    assert resolve_model(entry) == path
    assert len(server.hits) == 1
    # a damaged cached copy is downloaded again
    path.write_bytes(b"damaged")
    assert resolve_model(entry).read_bytes() == model_zip.read_bytes()
    assert len(server.hits) == 2
    assert sorted(p.name for p in private_cache.iterdir()) == ["remote-model-1.0.zip"]


def test_checksum_mismatch_leaves_nothing_in_cache(server, model_zip, private_cache):
    wrong = "0" * 64
    entry = entry_for(f"{server.url}/{model_zip.name}", wrong)
    with pytest.raises(ModelError) as info:
        resolve_model(entry)
    message = str(info.value)
    assert f"checksum mismatch: expected {wrong}, got {sha(model_zip)}" in message
    assert "try again" in message
    assert list(private_cache.iterdir()) == []


def test_file_url_download(model_zip, private_cache):
    entry = entry_for(model_zip.as_uri(), sha(model_zip), id="file-model")
    path = resolve_model(entry)
    assert path.parent == private_cache and path.read_bytes() == model_zip.read_bytes()


def test_network_errors_name_the_url(server, model_zip, private_cache):
    missing = entry_for(f"{server.url}/absent.zip", sha(model_zip))
    with pytest.raises(ModelError, match=f"could not download {missing.url}"):
        resolve_model(missing)
    closed = CountingServer(model_zip.parent)
    closed.close()  # nothing listens on that port now
    refused = entry_for(f"{closed.url}/{model_zip.name}", sha(model_zip))
    with pytest.raises(ModelError, match=f"could not download {refused.url}"):
        resolve_model(refused)
    assert list(private_cache.iterdir()) == []


def test_local_entries_and_paths(model_zip, tmp_path):
    assert resolve_model(model_zip) == model_zip
    assert resolve_model(str(model_zip)) == model_zip
    local = entry_for(str(model_zip), sha(model_zip))
    assert resolve_model(local) == model_zip
    with pytest.raises(ModelError, match="checksum mismatch"):
        resolve_model(entry_for(str(model_zip), "f" * 64))
    with pytest.raises(ModelError, match="not found"):
        resolve_model(entry_for(str(tmp_path / "gone.zip"), ""))
    with pytest.raises(ModelError, match="unknown model 'no-such-model'.*spinesegdiff-demo"):
        resolve_model("no-such-model")


def test_add_user_model_round_trip(model_zip, private_cache):
    bundled_before = (REPO / "SpineSegDiffLib" / "resources" / "Models.json").read_bytes()
    entry = add_user_model(model_zip)
    assert (entry.id, entry.version, entry.source) == ("my-model", "2.0", "user")
    assert entry.sha256 == sha(model_zip) and entry.size_bytes == model_zip.stat().st_size
    assert entry.sequences == ("T2",) and entry.training_data == "two phantoms"
    cached = Path(entry.url)
    assert cached.parent == private_cache and cached.read_bytes() == model_zip.read_bytes()
    assert (REPO / "SpineSegDiffLib" / "resources" / "Models.json").read_bytes() == bundled_before

    models = all_models()
    assert [m.id for m in models if m.source == "user"] == ["my-model"]
    assert {m.id for m in models} >= {"spinesegdiff-demo", "my-model"}
    # resolvable by id, even after the original file is gone
    model_zip.unlink()
    assert resolve_model("my-model") == cached
    assert read_metadata(cached)["id"] == "my-model"
    # adding it again replaces the entry instead of listing it twice
    add_user_model(cached)
    user = json.loads((private_cache / "user_models.json").read_text())
    assert [m["id"] for m in user["models"]] == ["my-model"]


def test_add_user_model_refuses_a_broken_file(tmp_path, private_cache):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelError, match="broken.zip"):
        add_user_model(broken)
    assert not private_cache.exists() or list(private_cache.iterdir()) == []

