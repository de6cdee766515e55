"""SHA-256 of files (model files, registry checks, cache keys)."""

from __future__ import annotations

import hashlib
import os





def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file as lowercase hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
