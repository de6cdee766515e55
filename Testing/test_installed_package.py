"""The engine as an installed package: build a wheel, install it into a fresh virtual environment
(offline, no dependencies from an index), and run the `spinesegdiff` command there from a folder
outside the checkout. The bundled registry and model must come from the installed package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO

pytestmark = pytest.mark.slow


def _run(command: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    run = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=timeout)
    assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("installed")
    # build from a copy of what the wheel is made of, so the checkout gets no build/ or egg-info
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "SpineSegDiffLib", source / "SpineSegDiffLib", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", wheels, source], cwd=root)
    wheel = next(wheels.glob("spinesegdiff-*.whl"))

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=root)
    # the dependencies (torch, MONAI, ...) come from the project's environment, added only after the
    # install so that pip never sees (or touches) that environment's packages
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
                .stdout.strip())
    (site / "zz_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cwd = root / "elsewhere"
    cwd.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "exe": venv / "bin" / "spinesegdiff",
            "site": site, "env": env, "cwd": cwd}


def test_wheel_holds_every_subpackage_and_the_package_data(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "SpineSegDiffLib").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk - names == set(), f"left out of the wheel: {sorted(on_disk - names)}"


def test_installed_command_lists_models_from_package_data(installed):
    run = _run([installed["exe"], "--help"], cwd=installed["cwd"], env=installed["env"])
    assert "segment" in run.stdout and "models" in run.stdout
    where = _run([installed["python"], "-c", "import SpineSegDiffLib.model.registry as r; print(r.__file__); "
                  "print(r.resolve_model('spinesegdiff-demo'))"], cwd=installed["cwd"], env=installed["env"])
    module_file, model_file = (Path(line) for line in where.stdout.split())
    assert module_file.is_relative_to(installed["site"]), module_file
    assert model_file.is_relative_to(installed["site"]) and model_file.is_file(), model_file
    listed = _run([installed["exe"], "models", "list"], cwd=installed["cwd"], env=installed["env"])
    assert "spinesegdiff-demo" in listed.stdout


def test_installed_command_segments(installed, phantom_folder):
    image = phantom_folder / "images" / "1_t2.mha"
    out = installed["cwd"] / "out"
    run = _run([installed["exe"], "segment", image, "--samples", "1", "--steps", "1", "--device", "cpu",
                "--progress", "none", "--output-segmentation", out / "seg.nii.gz",
                "--output-uncertainty", out / "unc.nii.gz", "--output-summary", out / "summary.json"],
               cwd=installed["cwd"], env=installed["env"])
    assert "error:" not in run.stderr
    segmentation, source = sitk.ReadImage(str(out / "seg.nii.gz")), sitk.ReadImage(str(image))
    assert segmentation.GetSize() == source.GetSize()
    np.testing.assert_allclose(segmentation.GetOrigin(), source.GetOrigin(), atol=1e-3)  # NIfTI stores float32
    assert set(np.unique(sitk.GetArrayViewFromImage(segmentation))) <= {0, 1, 2, 3}
    assert (out / "unc.nii.gz").is_file() and (out / "summary.json").is_file()
