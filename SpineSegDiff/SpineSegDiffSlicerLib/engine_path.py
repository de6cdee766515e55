"""Where the engine (`SpineSegDiffLib`) is, putting it on ``sys.path`` once, and what a reload drops.

Torch-free and Slicer-free: the module file calls this once at import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

# The packages Slicer's "Reload" must forget so that edits to them are read again.
RELOADED_PACKAGES = ("SpineSegDiffSlicerLib", "SpineSegDiffLib")


def engine_directory(module_dir: str | Path) -> Path:
    """The folder that holds the ``SpineSegDiffLib`` package.

    Installed extension: beside the module file (CMake installs the engine there). Source
    tree (module folder added to Slicer's module paths): the repository root, one level up.
    """
    module_dir = Path(module_dir).resolve()
    for candidate in (module_dir, module_dir.parent):
        if (candidate / "SpineSegDiffLib" / "__init__.py").is_file():
            return candidate
    raise RuntimeError(f"the SpineSegDiff engine (SpineSegDiffLib) was not found beside {module_dir}; "
                       "reinstall the SpineSegDiff extension")


def ensure_engine_importable(module_dir: str | Path) -> Path:
    """Put the engine's folder on ``sys.path`` (once); returns that folder."""
    engine = engine_directory(module_dir)
    if str(engine) not in sys.path:
        sys.path.insert(0, str(engine))
    return engine


def reloadable_modules(loaded: Iterable[str]) -> list[str]:
    """The names among ``loaded`` (e.g. ``sys.modules``) that belong to the reloaded packages."""
    return sorted(name for name in loaded if name.split(".", 1)[0] in RELOADED_PACKAGES)


def forget_modules() -> list[str]:
    """Drop the reloaded packages from ``sys.modules``; the next import reads them from disk."""
    names = reloadable_modules(list(sys.modules))
    for name in names:
        del sys.modules[name]
    return names
