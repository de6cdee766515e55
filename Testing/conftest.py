"""Shared pytest fixtures: paths, the real-data folder, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SPINESEGDIFF_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
if (REAL_DATA / "cases.csv").is_file():  # as scripts/test.sh does; CLI subprocesses inherit it
    os.environ.setdefault("SPINESEGDIFF_REAL_DATA", str(REAL_DATA))

# Model downloads and the sample cache go to a throw-away folder, never the user's own
# cache (the CLI subprocesses inherit this)
os.environ.setdefault("SPINESEGDIFF_CACHE", tempfile.mkdtemp(prefix="ssd-test-cache-") + "/models")

# The Slicer module's logic package lives beside the module file (Slicer's layout).
sys.path.insert(0, str(REPO / "SpineSegDiff"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine_fixtures


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "cases.csv").is_file():
        pytest.skip(f"real data folder not found at {REAL_DATA}")
    return REAL_DATA


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m SpineSegDiffLib ARGS` as a real subprocess, capturing text output."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "SpineSegDiffLib", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory) -> Path:
    from engine_fixtures import make_phantom_folder

    return make_phantom_folder(tmp_path_factory.mktemp("phantoms") / "spider", cases=2, seed=5)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, phantom_folder) -> Path:
    from engine_fixtures import train_tiny_model

    return train_tiny_model(phantom_folder, tmp_path_factory.mktemp("tiny_model"))
