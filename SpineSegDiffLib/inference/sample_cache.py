"""On-disk cache of drawn ensemble samples, so the sample slider costs no network time.

The CLI is a new process per run and the Slicer module runs the CLI, so the cache
lives on disk, beside the model cache: ``<cache>/spinesegdiff/ensembles/<key>/``.
The key hashes everything a sample depends on (input voxels and geometry, the model
grid, the model file's SHA-256, steps, fused steps, seed), so a different input, model
or setting never hits.

One file per sample: ``sample_<index>_<crc32>.npy``, uint8 probability levels
(``uncertainty.QUANT_LEVELS``) of shape (Ts, n_slices, C, H, W) at the fused steps.
uint8 rather than float16: half the disk and read time, and integer sums make the
fused result independent of where the samples came from (see
``uncertainty.statistics_from_levels``). Files are written atomically; the CRC in the
name catches a damaged file, which is then deleted and recomputed, never fatal.

Bounded: at most ``max_entries`` ensembles (least recently used go first) and at most
``limit_bytes`` on disk in all (env ``SPINESEGDIFF_CACHE_LIMIT_MB``, default 2048).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from SpineSegDiffLib.core.atomic import atomic_path, write_text

FORMAT_VERSION = 1
DEFAULT_LIMIT_MB = 2048
DEFAULT_MAX_ENTRIES = 3
LIMIT_ENV = "SPINESEGDIFF_CACHE_LIMIT_MB"
_SAMPLE_FILE = re.compile(r"^sample_(\d{4})_([0-9a-f]{8})\.npy$")


def ensembles_dir() -> Path:
    """``ensembles/`` beside the model cache (see ``core.caches``)."""
    from SpineSegDiffLib.core import caches

    return caches.ensembles_dir()


def limit_bytes_from_env() -> int:
    """The size limit: $SPINESEGDIFF_CACHE_LIMIT_MB, else 2048 MB (a bad value: the default)."""
    try:
        megabytes = float(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT_MB))
    except ValueError:
        megabytes = DEFAULT_LIMIT_MB
    return int(max(0.0, megabytes) * 1024 * 1024)


def ensemble_key(parts: dict[str, Any], arrays: list[np.ndarray]) -> str:
    """SHA-256 (first 32 hex digits) of JSON-able ``parts`` and the bytes of ``arrays``."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:32]


@dataclass
class SampleCache:
    """The cached samples of one ensemble (one input, model and setting)."""

    folder: Path
    shape: tuple[int, ...]  # (Ts, n_slices, C, H, W) of one sample
    limit_bytes: int
    max_entries: int = DEFAULT_MAX_ENTRIES

    @classmethod
    def open(cls, key: str, shape: tuple[int, ...], root: Path | None = None,
             limit_bytes: int | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
             description: dict[str, Any] | None = None) -> "SampleCache":
        """The entry ``key`` under ``root`` (default ``ensembles_dir()``), marked as just used."""
        root = Path(root) if root is not None else ensembles_dir()
        cache = cls(root / key, tuple(int(s) for s in shape),
                    limit_bytes_from_env() if limit_bytes is None else limit_bytes, max_entries)
        cache.folder.mkdir(parents=True, exist_ok=True)
        info = cache.folder / "ensemble.json"
        if not info.exists():  # for people looking into the cache folder
            write_text(info, json.dumps({"format": FORMAT_VERSION, "shape": list(cache.shape),
                                         **(description or {})}, indent=1) + "\n")
        cache.touch()
        return cache

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.shape))

    def touch(self) -> None:
        """Mark as most recently used (the folder's modification time orders eviction)."""
        try:
            now = time.time()
            os.utime(self.folder, (now, now))
        except OSError:
            pass

    def _files(self) -> dict[int, tuple[Path, int]]:
        found: dict[int, tuple[Path, int]] = {}
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            return found
        for path in entries:
            match = _SAMPLE_FILE.match(path.name)
            if match:
                found[int(match.group(1))] = (path, int(match.group(2), 16))
        return found

    def load_leading(self, samples: int) -> list[np.ndarray]:
        """Samples 0, 1, ... up to ``samples``, stopping at the first missing or damaged one.

        A damaged file (wrong shape, type or checksum, unreadable) is deleted so the
        run recomputes it.
        """
        files = self._files()
        loaded: list[np.ndarray] = []
        for index in range(samples):
            if index not in files:
                break
            path, crc = files[index]
            array = self._read(path, crc)
            if array is None:
                path.unlink(missing_ok=True)
                break
            loaded.append(array)
        return loaded

    def _read(self, path: Path, crc: int) -> np.ndarray | None:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.uint8 or array.shape != self.shape:
            return None
        if zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B")) != crc:
            return None
        return array

    def store(self, index: int, levels: np.ndarray) -> bool:
        """Write sample ``index`` atomically if the size limit allows; True if stored."""
        levels = np.ascontiguousarray(levels, dtype=np.uint8)
        if levels.shape != self.shape:
            raise ValueError(f"sample of shape {levels.shape}, the cache holds {self.shape}")
        evict(self.folder.parent, keep=self.folder, limit_bytes=self.limit_bytes - levels.nbytes,
              max_entries=self.max_entries)
        if folder_bytes(self.folder) + levels.nbytes > self.limit_bytes:
            return False  # this ensemble alone fills the cache: keep the first samples only
        for old, _ in [v for k, v in self._files().items() if k == index]:
            old.unlink(missing_ok=True)
        crc = zlib.crc32(memoryview(levels).cast("B"))
        try:
            with atomic_path(self.folder / f"sample_{index:04d}_{crc:08x}.npy") as tmp:
                np.save(tmp, levels, allow_pickle=False)
        except OSError:  # a full or read-only disk must not fail the segmentation
            return False
        self.touch()
        return True


def folder_bytes(folder: Path) -> int:
    """Bytes of the files directly inside ``folder`` (0 if it is gone)."""
    total = 0
    try:
        for path in folder.iterdir():
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:
                pass
    except OSError:
        return 0
    return total


def evict(root: Path, keep: Path | None, limit_bytes: int, max_entries: int) -> list[Path]:
    """Delete least recently used ensembles under ``root`` until at most ``max_entries``
    remain and they hold at most ``limit_bytes``; ``keep`` is never deleted. Returns the
    deleted folders."""
    try:
        entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []

    def last_used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    others = sorted((p for p in entries if keep is None or p != keep), key=last_used, reverse=True)
    total = folder_bytes(keep) if keep is not None else 0
    slots = max_entries - (1 if keep is not None else 0)
    deleted = []
    for rank, path in enumerate(others):
        size = folder_bytes(path)
        if rank < slots and total + size <= limit_bytes:
            total += size
            continue
        _remove(path)
        deleted.append(path)
    return deleted


def _remove(folder: Path) -> None:
    # rename first, so a reader never sees a half-deleted ensemble under its key
    trash = folder.parent / f".trash-{folder.name}-{os.getpid()}"
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
