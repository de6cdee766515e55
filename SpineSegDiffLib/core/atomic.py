"""Write files and folders so that nobody ever sees a half-written one.

Everything is written under a temporary name in the destination's folder, checked,
and renamed into place at the end, so an interrupted or failed run leaves either the
old file, or no file, never a truncated one. Temporary names carry the writer's
process id, so the leftovers of a killed run are recognised and removed later
(``remove_stale_parts``) without touching a write still in progress.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from SpineSegDiffLib.core.errors import OutputError

# ".NAME.PID.RANDOM.part[.EXT]": what atomic_path / atomic_dir create
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.part(\..*)?$")

# errors of the file system, not of the program: one clear line for the user
_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EIO: "input/output error", errno.EFBIG: "file too large"}

Verifier = Callable[[Path], None]


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


def _output_error(path: Path, exc: OSError) -> OutputError:
    reason = _DISK_ERRORS.get(exc.errno) or exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}; nothing was written under that name, "
                       "free space or choose another folder and run again")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_parts(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temporary files and folders of writers that no longer run (only those
    meant to become ``name`` if given); return them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    entries = folder.glob(f".{glob.escape(name)}.*.part*") if name else folder.iterdir()
    for entry in entries:
        match = _PART.match(entry.name)
        if not match or (name and match["name"] != name) or int(match["pid"]) == os.getpid() \
                or _process_alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # not ours to fight over; it stays hidden and is never read as an input
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, verify: Verifier | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; check it and rename it onto ``path`` on success.

    Before the rename the file must exist and be non-empty, and ``verify(tmp)`` (if given)
    must pass: writers that do not report a short write (ITK's gzip writer on a full
    disk) are caught here. A file-system error becomes one ``OutputError`` line.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path.parent, path.name)  # what a killed earlier write left
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".part" + _split_suffix(path), dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            if tmp_path.stat().st_size == 0:
                raise OutputError(f"cannot write {path}: the writer produced an empty file; "
                                  "check the free space and run again")
            if verify is not None:
                verify(tmp_path)
            _default_permissions(tmp_path, 0o666)
            os.replace(tmp_path, path)
        except OutputError:
            raise
        except OSError as exc:
            raise _output_error(path, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    Refuses to replace an existing folder: callers decide about overwriting.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part",
                                    dir=path.parent))
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        try:
            yield tmp
            _default_permissions(tmp, 0o777)
            os.rename(tmp, path)
        except OutputError:
            raise
        except OSError as exc:
            raise _output_error(path, exc) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    data = text.encode("utf-8")

    def complete(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise OutputError(f"cannot write {path}: only {tmp.stat().st_size} of {len(data)} "
                              "bytes reached the disk; free space and run again")

    with atomic_path(path, verify=complete) as tmp:
        tmp.write_bytes(data)
