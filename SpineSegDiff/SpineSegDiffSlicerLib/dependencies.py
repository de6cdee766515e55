"""The engine's Python packages in Slicer's Python: which are missing, and installing them.

The checks are pure Python (tested with pytest); only :func:`setup_dependencies` talks to
the user and to pip, through ``slicer.util``, imported where it is used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Callable

# Import name -> distribution name; what the engine process needs in Slicer's Python.
ENGINE_IMPORTS = {"torch": "torch", "monai": "monai", "SimpleITK": "SimpleITK",
                  "safetensors": "safetensors", "scipy": "scipy", "slicerio": "slicerio",
                  "tqdm": "tqdm", "PIL": "pillow"}
# Slicer ships its own SimpleITK build (with Slicer's IO); never replace it with the wheel.
KEEP_SLICER_OWN = {"SimpleITK"}
TORCH_REQUIREMENT = ">=2.4"


def pinned_requirements(requirements_file: str | Path) -> dict[str, str]:
    """Distribution name (lower case) -> pinned line ``name==version``; comments and unpinned lines skipped."""
    pins = {}
    for line in Path(requirements_file).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            pins[line.split("==", 1)[0].strip().lower()] = line
    return pins


def import_name_of(requirement_line: str) -> str:
    """The name ``import`` uses for a pinned line's distribution ('pillow==1' -> 'PIL')."""
    distribution = requirement_line.split("==", 1)[0].strip().lower()
    return next((name for name, dist in ENGINE_IMPORTS.items() if dist.lower() == distribution), distribution)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements_file: str | Path,
                         installed_version: Callable[[str], str | None] = _installed_version,
                         importable: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None
                         ) -> list[str]:
    """Pinned lines that are not installed at their version (torch comes separately)."""
    missing = []
    for distribution, line in pinned_requirements(requirements_file).items():
        wanted = line.split("==", 1)[1].strip()
        if import_name_of(line) in KEEP_SLICER_OWN and importable(import_name_of(line)):
            continue
        if installed_version(distribution) != wanted:
            missing.append(line)
    return missing


def setup_dependencies(requirements_file: str | Path, ask_confirmation: bool = True) -> bool:
    """Make sure the engine's packages exist in Slicer's Python; True when ready to run.

    Asks before installing. torch comes from the PyTorch extension's helper (it picks
    the CUDA build that fits this computer); the rest are pinned in requirements.txt.
    The engine runs in a new process, so fresh packages are used at once; a restart is
    needed only when a package already loaded into Slicer itself was replaced.
    """
    import slicer

    torch_missing = importlib.util.find_spec("torch") is None
    missing = missing_requirements(requirements_file)
    if not torch_missing and not missing:
        return True
    names = (["torch (PyTorch)"] if torch_missing else []) + missing
    if ask_confirmation and not slicer.util.confirmOkCancelDisplay(
            "SpineSegDiff needs these Python packages in Slicer:\n  " + "\n  ".join(names) +
            "\n\nInstall them now? This downloads several hundred MB and can take minutes.",
            windowTitle="SpineSegDiff: install dependencies"):
        return False
    if torch_missing and not _install_torch():
        return False
    if missing:
        already_loaded = [line for line in missing if import_name_of(line) in sys.modules]
        slicer.util.pip_install(" ".join(missing))
        if already_loaded:
            if ask_confirmation and slicer.util.confirmYesNoDisplay(
                    "Updated packages that Slicer had already loaded (" + ", ".join(already_loaded) +
                    "). Restart Slicer now to use them?", windowTitle="SpineSegDiff: restart needed"):
                slicer.util.restart()
            logging.warning("SpineSegDiff: restart Slicer to use the updated " + ", ".join(already_loaded))
    return True


def _install_torch() -> bool:
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("SpineSegDiff needs the PyTorch extension: install 'PyTorch' "
                                 "in the Extensions Manager, restart Slicer, then try again.")
        return False
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                     torchVersionRequirement=TORCH_REQUIREMENT) is None:
        slicer.util.errorDisplay("PyTorch could not be installed; see the Python console "
                                 "(View > Python Console) for pip's message.")
        return False
    return True
