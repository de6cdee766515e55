"""Write files and folders so that nobody ever sees a half-written one.

Everything is written under a temporary name in the destination's folder and
renamed into place at the end, so an interrupted run leaves either the old file,
or no file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _split_suffix(path: Path) -> str:
    # keep compound suffixes (.nii.gz, .seg.nrrd) so writers that pick the format
    # from the extension still see the right one on the temporary name
    name = path.name
    for compound in (".seg.nrrd", ".nii.gz"):
        if name.endswith(compound):
            return compound
    return path.suffix


def _default_permissions(path: Path, mode: int) -> None:
    # mkstemp/mkdtemp create private (0600/0700) entries; give the final file the
    # permissions a plain open() would have, so others can read results and exports
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + _split_suffix(path),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _default_permissions(tmp_path, 0o666)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    Refuses to replace an existing folder: callers decide about overwriting.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        _default_permissions(tmp, 0o777)
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
