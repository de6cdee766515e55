"""The engine's layout as docs/architecture.md states it: every module it names exists, every module
is named, packages import only the layers below them, and the torch-free set imports no torch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

ENGINE = REPO / "SpineSegDiffLib"
SLICER_LIB = REPO / "SpineSegDiff" / "SpineSegDiffSlicerLib"
ARCHITECTURE = REPO / "docs" / "architecture.md"
# The import layers of docs/architecture.md ("Packages and import layers").
MAY_IMPORT = {
    "core": set(),
    "data": {"core"},
    "grid": {"core", "data"},
    "model": {"core"},
    "evaluation": {"core", "data", "grid"},
    "measure": {"core", "data"},
    "inference": {"core", "data", "grid", "model"},
    "training": {"core", "data", "grid", "model", "evaluation"},
    "cli": {"core", "data", "grid", "model", "evaluation", "inference", "training", "measure"},
    "resources": set(),
}
TORCH_FREE = [ENGINE / "model" / "metadata.py", ENGINE / "model" / "registry.py",
              ENGINE / "model" / "diffusion_config.py", ENGINE / "model" / "levels.py",
              *[ENGINE / "inference" / f"{m}.py" for m in ("fusion", "auto_samples", "model_info", "on_input",
                                                           "request_index", "cached_run", "postprocess",
                                                           "summary", "sample_masks", "cropping")],
              ENGINE / "grid" / "crop.py",
              *sorted((ENGINE / "core").glob("*.py")), *sorted(SLICER_LIB.glob("*.py"))]
MAX_LINES = 400
TOO_LONG_FOR_NOW: set[str] = set()


def _engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_module_the_architecture_names_exists_and_every_module_is_named():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text))
    named_slicer = set(re.findall(r"`SpineSegDiffSlicerLib/([a-z_]+\.py)`", text))
    missing = sorted(n for n in named if not (ENGINE / n).is_file() and not (REPO / n).is_file()
                     and not (REPO / "SpineSegDiff" / n).is_file() and not (REPO / "Testing" / n).is_file()
                     and not (SLICER_LIB / n).is_file())
    assert missing == [], f"docs/architecture.md names modules that do not exist: {missing}"
    engine = {p.relative_to(ENGINE).as_posix() for p in _engine_modules() if p.name != "__init__.py"}
    assert sorted(engine - named) == [], "engine modules missing from docs/architecture.md"
    slicer = {p.name for p in SLICER_LIB.glob("*.py") if p.name != "__init__.py"}
    assert sorted(slicer - named_slicer) == [], "SpineSegDiffSlicerLib modules missing from docs/architecture.md"


def test_packages_import_only_the_layers_below():
    wrong = []
    for path in _engine_modules():
        parts = path.relative_to(ENGINE).parts
        if len(parts) < 2:
            continue  # __init__ / __main__ of the engine
        package = parts[0]
        for module in _imports(path):
            if module.startswith("SpineSegDiffLib."):
                target = module.split(".")[1]
                if target != package and target not in MAY_IMPORT[package]:
                    wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert wrong == []


def test_the_engine_imports_neither_qt_nor_slicer():
    bad = [f"{p.relative_to(REPO)}: {m}" for p in _engine_modules() for m in _imports(p)
           if m.split(".")[0] in ("qt", "slicer", "vtk", "ctk", "PythonQt")]
    assert bad == []


def test_the_torch_free_set_has_no_torch_import_at_module_level():
    bad = [f"{p.relative_to(REPO)}: {m}" for p in TORCH_FREE for m in _imports(p, top_level_only=True)
           if m.split(".")[0] in ("torch", "monai")]
    assert bad == []


def test_files_stay_small():
    long = {p.relative_to(ENGINE).as_posix(): n for p in _engine_modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    long |= {f"SpineSegDiffSlicerLib/{p.name}": n for p in SLICER_LIB.glob("*.py")
             if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert set(long) - TOO_LONG_FOR_NOW == set(), long
