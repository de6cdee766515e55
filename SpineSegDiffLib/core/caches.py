"""Where SpineSegDiff keeps files between runs, how much they hold, and clearing them.

Two caches, side by side in the per-user cache folder ($SPINESEGDIFF_CACHE, else
$XDG_CACHE_HOME or ~/.cache, then spinesegdiff/models):
- ``models``: downloaded model files, and model files a user added (``models add``,
  listed in user_models.json);
- ``ensembles``: the sample cache, which holds results derived from patient images.
Torch-free, so the Slicer panel can show and clear them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

USER_REGISTRY_NAME = "user_models.json"
KINDS = ("models", "ensembles")


def models_dir() -> Path:
    """Per-user model cache: $SPINESEGDIFF_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/spinesegdiff/models."""
    if os.environ.get("SPINESEGDIFF_CACHE"):
        return Path(os.environ["SPINESEGDIFF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "spinesegdiff" / "models"


def ensembles_dir() -> Path:
    """The sample cache: ``ensembles/`` beside the model cache."""
    return models_dir().parent / "ensembles"


def tree_bytes(folder: Path) -> int:
    """Bytes of all files under ``folder`` (0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def _user_model_files(folder: Path) -> set[str]:
    try:
        data = json.loads((folder / USER_REGISTRY_NAME).read_text(encoding="utf-8"))
        return {Path(m["url"]).name for m in data.get("models", []) if isinstance(m, dict) and "url" in m}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def describe() -> dict[str, dict]:
    """Per cache: folder, bytes, and what clearing it removes."""
    return {
        "models": {"folder": str(models_dir()), "bytes": tree_bytes(models_dir()),
                   "clears": "downloaded model files (models you added are kept)"},
        "ensembles": {"folder": str(ensembles_dir()), "bytes": tree_bytes(ensembles_dir()),
                      "clears": "cached ensemble samples (derived from patient images)"},
    }


def clear(kind: str) -> int:
    """Remove the cache ``kind`` ("models" or "ensembles"); returns the bytes freed.

    Clearing ``models`` keeps the files a user added (they exist nowhere else) and the
    user registry; downloaded files are fetched again when next used.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cache '{kind}'; choose one of {', '.join(KINDS)}")
    folder = models_dir() if kind == "models" else ensembles_dir()
    if not folder.is_dir():
        return 0
    before = tree_bytes(folder)
    keep = _user_model_files(folder) | {USER_REGISTRY_NAME} if kind == "models" else set()
    for path in folder.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass
    return before - tree_bytes(folder)
