"""Shared checks of the reliability tests: one `error:` line, inputs unchanged, nothing partial left."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def error_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    """The run failed with ``code`` and said why in exactly one `error:` line, no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def files_in(folder: Path) -> set[str]:
    """Every name in ``folder`` (hidden temporary files included)."""
    return {p.name for p in Path(folder).iterdir()} if Path(folder).exists() else set()


def write_mri(path: Path, size=(24, 40, 40), spacing=(1.0, 1.0, 3.0), seed: int = 0) -> Path:
    """A small, valid, non-constant 3D volume (z, y, x = size)."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(300, 60, size).astype(np.float32))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return path


def run_main(*args) -> subprocess.CompletedProcess:
    """The real CLI entry point in this process (for long tables of cheap refusals; the
    headline cases of each test file run as real subprocesses)."""
    import contextlib
    import io

    from SpineSegDiffLib.cli.entry import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
