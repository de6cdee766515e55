"""The caches a user can see and clear (core/caches.py, `spinesegdiff info`)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def _env(tmp_path) -> dict:
    return dict(os.environ, SPINESEGDIFF_CACHE=str(tmp_path / "cache" / "models"),
                PYTHONPATH=str(REPO))


def test_clearing_models_keeps_what_the_user_added_and_ensembles_go_entirely(tmp_path, monkeypatch):
    from SpineSegDiffLib.core import caches

    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "c" / "models"))
    models = caches.models_dir()
    models.mkdir(parents=True)
    (models / "downloaded-1.0.zip").write_bytes(b"x" * 1000)
    (models / "mine-2.0.zip").write_bytes(b"y" * 500)
    (models / "user_models.json").write_text(json.dumps(
        {"schema_version": 1, "models": [{"id": "mine", "url": str(models / "mine-2.0.zip")}]}))
    ensemble = caches.ensembles_dir() / "abc"
    ensemble.mkdir(parents=True)
    (ensemble / "sample_0000_deadbeef.npy").write_bytes(b"z" * 2000)
    sizes = caches.describe()
    assert sizes["ensembles"]["bytes"] == 2000 and sizes["models"]["bytes"] >= 1500
    assert caches.clear("models") == 1000
    assert sorted(p.name for p in models.iterdir()) == ["mine-2.0.zip", "user_models.json"]
    assert caches.clear("ensembles") == 2000
    assert caches.describe()["ensembles"]["bytes"] == 0
    assert caches.clear("ensembles") == 0  # already empty: nothing to do, no error


def test_sample_cache_and_registry_use_the_same_folders(tmp_path, monkeypatch):
    from SpineSegDiffLib.core import caches
    from SpineSegDiffLib.inference import sample_cache
    from SpineSegDiffLib.model import registry

    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "models"))
    assert registry.cache_dir() == caches.models_dir() == tmp_path / "models"
    assert sample_cache.ensembles_dir() == caches.ensembles_dir() == tmp_path / "ensembles"


def test_info_reports_device_and_caches_and_clears(tmp_path):
    env = _env(tmp_path)
    ensembles = tmp_path / "cache" / "ensembles" / "k"
    ensembles.mkdir(parents=True)
    (ensembles / "sample_0000_00000000.npy").write_bytes(b"0" * 4096)
    run = subprocess.run([sys.executable, "-m", "SpineSegDiffLib", "info", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["devices"]["auto"] in ("cpu", "cuda", "mps")
    assert report["caches"]["ensembles"]["bytes"] == 4096
    run = subprocess.run([sys.executable, "-m", "SpineSegDiffLib", "info", "--clear-cache", "ensembles"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "cleared the ensembles cache" in run.stdout
    assert not ensembles.exists()
