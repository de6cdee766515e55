"""The engine's Python packages in Slicer's Python: which are missing, and installing them.

The checks are pure Python (tested with pytest); only :func:`setup_dependencies` talks to
the user and to pip, through ``slicer``, imported where it is used. Requirements are version
ranges (Resources/requirements.txt), so a compatible version another extension installed is
kept. Slicer >= 5.11 installs them with ``slicer.pydeps.pip_ensure``; older Slicer with
``slicer.util.pip_install``. torch comes from the PyTorch extension and its *version* is checked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Callable

try:
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - Slicer's Python without 'packaging': pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import InvalidVersion, Version

try:  # the panel's texts, translatable as in Slicer's own modules; plain text outside Slicer
    from slicer.i18n import tr as _
except ImportError:
    def _(text: str) -> str:
        return text

# Import name -> distribution name; what the engine process needs in Slicer's Python.
ENGINE_IMPORTS = {"torch": "torch", "monai": "monai", "SimpleITK": "SimpleITK",
                  "safetensors": "safetensors", "scipy": "scipy", "slicerio": "slicerio",
                  "tqdm": "tqdm", "PIL": "pillow", "pydicom": "pydicom", "highdicom": "highdicom",
                  "matplotlib": "matplotlib"}
# Slicer ships its own SimpleITK build (with Slicer's IO); never replace it with the wheel.
KEEP_SLICER_OWN = {"SimpleITK"}
TORCH_REQUIREMENT = ">=2.4"
# pydicom 3 and highdicom need Python >= 3.10, which Slicer ships from 5.8 on
MIN_SLICER_VERSION = (5, 8)
# never pulled in as a dependency of another package: torch from the PyTorch extension, SimpleITK is Slicer's
SKIP_PACKAGES = ["torch", "SimpleITK"]


def load_requirements(requirements_file: str | Path) -> list[Requirement]:
    """The requirement lines of a requirements file (comments, blank and option lines skipped)."""
    requirements = []
    for line in Path(requirements_file).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirements.append(Requirement(line))
    return requirements


def import_name_of(requirement: Requirement | str) -> str:
    """The name ``import`` uses for a requirement's distribution ('pillow>=1' -> 'PIL')."""
    distribution = (requirement if isinstance(requirement, Requirement) else Requirement(requirement)).name.lower()
    return next((name for name, dist in ENGINE_IMPORTS.items() if dist.lower() == distribution), distribution)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(requirement: Requirement, installed: str | None) -> bool:
    if installed is None:
        return False
    try:
        return requirement.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        return False


def missing_requirements(requirements_file: str | Path,
                         installed_version: Callable[[str], str | None] = _installed_version,
                         importable: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None
                         ) -> list[Requirement]:
    """Requirements not installed within their range (Slicer's own SimpleITK counts as installed)."""
    missing = []
    for requirement in load_requirements(requirements_file):
        if import_name_of(requirement) in KEEP_SLICER_OWN and importable(import_name_of(requirement)):
            continue
        if not satisfied(requirement, installed_version(requirement.name)):
            missing.append(requirement)
    return missing


def torch_problem(installed_version: Callable[[str], str | None] = _installed_version) -> str | None:
    """None when torch is installed at a usable version, else what is wrong (one line).
    Read from the package metadata: Slicer's process never imports torch."""
    version = installed_version("torch")
    if version is None:
        return _("torch (PyTorch) is not installed")
    # local builds carry '+cu121' etc.: compare the public version
    if not satisfied(Requirement("torch" + TORCH_REQUIREMENT), version.split("+", 1)[0]):
        return _("torch {version} is too old; SpineSegDiff needs torch{requirement}").format(
            version=version, requirement=TORCH_REQUIREMENT)
    return None


def slicer_version_problem(major: int, minor: int) -> str | None:
    if (major, minor) < MIN_SLICER_VERSION:
        need = ".".join(map(str, MIN_SLICER_VERSION))
        return _("SpineSegDiff needs Slicer {need} or newer (this is {major}.{minor}): its DICOM packages "
                 "need Python 3.10").format(need=need, major=major, minor=minor)
    return None


def setup_dependencies(requirements_file: str | Path, ask_confirmation: bool = True) -> bool:
    """Make sure the engine's packages exist in Slicer's Python; True when ready to run.

    Asks before installing. The engine runs in a new process, so fresh packages are used at
    once; a restart is offered only when a package already loaded into Slicer was replaced.
    """
    import slicer

    problem = slicer_version_problem(int(slicer.app.majorVersion), int(slicer.app.minorVersion))
    if problem:
        slicer.util.errorDisplay(problem)
        return False
    torch_issue = torch_problem()
    if torch_issue and not _install_torch(torch_issue, ask_confirmation):
        return False
    missing = missing_requirements(requirements_file)
    if not missing:
        return True
    pydeps = getattr(slicer, "pydeps", None)
    if pydeps is not None and hasattr(pydeps, "pip_ensure"):  # Slicer >= 5.11
        try:
            pydeps.pip_ensure(missing, skip_packages=SKIP_PACKAGES, prompt_install=ask_confirmation,
                              prompt_restart=ask_confirmation, requester="SpineSegDiff")
        except RuntimeError as exc:  # the user declined, or pip failed
            logging.warning(f"SpineSegDiff: dependencies not installed: {exc}")
            return False
        return not missing_requirements(requirements_file)
    return _install_with_pip(missing, ask_confirmation)


def _install_with_pip(missing: list[Requirement], ask_confirmation: bool) -> bool:
    """Older Slicer: ask, then slicer.util.pip_install of the missing ranges."""
    import slicer

    lines = [str(r) for r in missing]
    if ask_confirmation and not slicer.util.confirmOkCancelDisplay(
            _("SpineSegDiff needs these Python packages in Slicer:") + "\n  " + "\n  ".join(lines) + "\n\n" +
            _("Install them now? This downloads several hundred MB and can take minutes."),
            windowTitle=_("SpineSegDiff: install dependencies")):
        return False
    already_loaded = [r.name for r in missing if import_name_of(r) in sys.modules]
    slicer.util.pip_install(lines)
    if already_loaded:
        if ask_confirmation and slicer.util.confirmYesNoDisplay(
                _("Updated packages that Slicer had already loaded ({names}). Restart Slicer now to use them?").format(
                    names=", ".join(already_loaded)), windowTitle=_("SpineSegDiff: restart needed")):
            slicer.util.restart()
        logging.warning("SpineSegDiff: restart Slicer to use the updated " + ", ".join(already_loaded))
    return True


def _install_torch(problem: str, ask_confirmation: bool) -> bool:
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(problem + ". " + _("SpineSegDiff needs the PyTorch extension: install 'PyTorch' "
                                                    "in the Extensions Manager, restart Slicer, then try again."))
        return False
    if ask_confirmation and not slicer.util.confirmOkCancelDisplay(
            problem + ".\n\n" + _("Install PyTorch{requirement} now (the PyTorch extension picks the build for "
                                   "this computer)? This downloads several GB and can take minutes.").format(
                requirement=TORCH_REQUIREMENT),
            windowTitle=_("SpineSegDiff: install PyTorch")):
        return False
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                     torchVersionRequirement=TORCH_REQUIREMENT) is None:
        slicer.util.errorDisplay(_("PyTorch could not be installed; see the Python console "
                                   "(View > Python Console) for pip's message."))
        return False
    return torch_problem() is None
