"""What can be checked of the Slicer module without the Slicer application.

The module file imports Qt and Slicer's GUI classes, so here it is compiled and read, not
run: its .ui must hold every widget the code uses, each widget bound to the parameter node
must suit the parameter's type, CMake must ship every file, and the installed layout (the
engine beside the module) must let `python -m SpineSegDiffLib` find its model registry.
"""

from __future__ import annotations

import ast
import os
import py_compile
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "SpineSegDiff"
MODULE_FILE = MODULE_DIR / "SpineSegDiff.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SpineSegDiff.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
LOGIC_DIR = MODULE_DIR / "SpineSegDiffSlicerLib"

# Which widget classes Slicer's parameterNodeWrapper can bind to which parameter types
# (slicer/parameterNodeWrapper/guiConnectors.py).
BINDABLE = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QLineEdit", "QComboBox", "QTextEdit"},
    "pathlib.Path": {"ctkDirectoryButton", "ctkPathLineEdit"},
    "node": {"qMRMLNodeComboBox"},
}


def _ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _property(widget: ET.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop.find("string")
            return value.text if value is not None else ""
    return None


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _parameter_fields() -> dict[str, str]:
    """Field name -> type kind ('float', 'int', ..., 'node') of SpineSegDiffParameterNode."""
    cls = next(n for n in ast.walk(_module_tree())
               if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffParameterNode")
    fields = {}
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = statement.annotation
            if isinstance(annotation, ast.Subscript):  # Annotated[base, ...]
                annotation = annotation.slice.elts[0]
            text = ast.unparse(annotation)
            fields[statement.target.id] = "node" if text.startswith("vtkMRML") else text
    return fields


def _cmake_list(name: str) -> list[str]:
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} not found in {MODULE_CMAKE}"
    return [item.replace("${MODULE_NAME}", "SpineSegDiff") for item in match.group(1).split()]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_python_files_compile(tmp_path):
    for path in (MODULE_FILE, LOGIC_DIR / "self_test.py", REPO / "scripts" / "make_icon.py",
                 REPO / "scripts" / "make_sample_data.py"):
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


def test_every_widget_the_code_uses_is_in_the_ui():
    widgets = _ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text(encoding="utf-8")))
    assert used, "the module should use widgets from the .ui file"
    assert not used - set(widgets), f"widgets used in SpineSegDiff.py but missing in the .ui: {used - set(widgets)}"
    assert ET.parse(UI_FILE).getroot().find("widget").get("class") == "qMRMLWidget"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_module_file_sets_up_the_engine_path_once_at_import():
    tree = _module_tree()
    at_top = [n for n in tree.body if isinstance(n, ast.Assign) and _calls(n, "ensure_engine_importable")]
    assert len(at_top) == 1, "the engine path is set up by one module-level statement"
    assert len(_calls(tree, "ensure_engine_importable")) == 1, "and nowhere else"
    # every engine import comes after it
    first_engine_import = min(n.lineno for n in tree.body if isinstance(n, ast.ImportFrom)
                              and (n.module or "").startswith("SpineSegDiffLib"))
    assert at_top[0].lineno < first_engine_import


def test_module_file_keeps_only_what_belongs_there():
    tree = _module_tree()
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"SpineSegDiff", "SpineSegDiffWidget", "SpineSegDiffLogic", "SpineSegDiffTest",
            "SpineSegDiffParameterNode"} <= classes
    assert not {"SegmentationOutcome"} & classes, "pure helpers live in SpineSegDiffSlicerLib"
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for alias in n.names} | {(n.module or "").split(".")[0] for n in ast.walk(tree)
                                         if isinstance(n, ast.ImportFrom)}
    assert not {"zipfile", "torch", "monai", "importlib"} & imported, "model.json is read by model.metadata"
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffWidget")
    reload = next((n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "onReload"), None)
    assert reload is not None and _calls(reload, "forget_modules"), "onReload must reload the sub-packages"
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffLogic")
    defaults = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "modelDefaults")
    assert _calls(defaults, "model_defaults") and not any(isinstance(n, ast.Try) for n in ast.walk(defaults))


def test_every_widget_explains_itself():
    silent = [name for name, w in _ui_widgets().items()
              if w.get("class") not in ("QLabel", "qMRMLWidget") and not (_property(w, "toolTip") or "").strip()]
    assert silent == [], f"widgets without a tooltip: {silent}"


def test_ui_bindings_match_the_parameter_node():
    fields = _parameter_fields()
    bound = {}
    for name, widget in _ui_widgets().items():
        parameter = _property(widget, "SlicerParameterName")
        if parameter is None:
            continue
        assert parameter in fields, f"{name} is bound to '{parameter}', which the parameter node lacks"
        assert widget.get("class") in BINDABLE[fields[parameter]], (
            f"{name} ({widget.get('class')}) cannot show a {fields[parameter]} parameter '{parameter}'")
        assert parameter not in bound, f"'{parameter}' is bound twice ({bound.get(parameter)} and {name})"
        bound[parameter] = name
    expected = {"inputVolume", "samples", "steps", "device", "uncertaintyOpacity", "showUncertainty",
                "datasetFolder"}
    assert expected <= set(bound), f"parameters without a widget: {expected - set(bound)}"
    # a .ui default outside the parameter's range would be clamped silently: keep them equal
    samples = _ui_widgets()[bound["samples"]]
    limits = {p.get("name"): float(p[0].text) for p in samples.findall("property")
              if p.get("name") in ("minimum", "maximum")}
    assert limits == {"minimum": 1.0, "maximum": 32.0}


def test_cmake_ships_every_module_file():
    scripts = _cmake_list("MODULE_PYTHON_SCRIPTS")
    on_disk = {f"SpineSegDiffSlicerLib/{p.name}" for p in LOGIC_DIR.glob("*.py")}
    assert on_disk, "SpineSegDiffSlicerLib has no Python files"
    assert on_disk - set(scripts) == set(), f"not listed in MODULE_PYTHON_SCRIPTS: {on_disk - set(scripts)}"
    assert "SpineSegDiff.py" in scripts
    missing = [s for s in scripts + _cmake_list("MODULE_PYTHON_RESOURCES") if not (MODULE_DIR / s).is_file()]
    assert missing == [], f"listed in CMakeLists.txt but missing: {missing}"
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key}\s+\"[^\"]+\"\)", top), f"{key} is not set in CMakeLists.txt"
    assert "add_subdirectory(SpineSegDiff)" in top
    assert "WITH_GENERIC_TESTS" in MODULE_CMAKE.read_text(encoding="utf-8")


def test_slicer_requirements_are_ranges_that_hold_the_project_pins():
    from packaging.requirements import Requirement

    lines = [line.split("#", 1)[0].strip() for line in
             (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    requirements = {r.name.lower(): r for r in (Requirement(line) for line in lines if line)}
    project_pins = _pins(REPO / "requirements.txt")
    assert requirements and "torch" not in requirements, "torch must come from the PyTorch extension"
    for name, requirement in requirements.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">=", "<"}, f"{requirement}: a range (>= tested, < next major), not a pin"
        assert requirement.specifier.contains(project_pins[name]), f"{requirement} excludes the tested {project_pins[name]}"
        lower = next(spec.version for spec in requirement.specifier if spec.operator == ">=")
        assert lower == project_pins[name], f"{requirement}: the lower bound is the tested version"
    for name in ("monai", "safetensors", "scipy", "slicerio", "pydicom", "highdicom"):
        assert name in requirements


def test_cmake_and_module_declare_the_same_minimum_slicer():
    from SpineSegDiffSlicerLib.dependencies import MIN_SLICER_VERSION

    need = ".".join(map(str, MIN_SLICER_VERSION))
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf'VERSION_LESS\s+"?{re.escape(need)}"?', cmake), "CMakeLists.txt must refuse older Slicer"


def test_icon_is_a_128_pixel_png(tmp_path):
    from PIL import Image

    committed = MODULE_DIR / "Resources" / "Icons" / "SpineSegDiff.png"
    with Image.open(committed) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    # the script reproduces a drawing of the same size with visible content
    out = tmp_path / "icon.png"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_icon.py"), "--output", str(out)],
                   check=True, capture_output=True, timeout=60)
    with Image.open(out) as icon:
        assert icon.size == (128, 128) and icon.getextrema()[3][1] == 255  # opaque pixels exist


def test_sample_data_script_is_reproducible_and_checksummed(tmp_path):
    import hashlib

    import SimpleITK as sitk

    outputs = []
    for name in ("a.nrrd", "b.nrrd"):
        out = tmp_path / name
        run = subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"), "--output", str(out)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert (tmp_path / (name + ".sha256")).read_text().split()[0] == digest
        assert f"SHA256:{digest}" in run.stdout
        outputs.append(digest)
    assert outputs[0] == outputs[1], "the same seed must give the same file (and checksum)"
    image = sitk.ReadImage(str(tmp_path / "a.nrrd"))
    assert image.GetDimension() == 3 and min(image.GetSize()) > 1
    committed = MODULE_DIR / "Resources" / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
    if committed.is_file():  # the shipped sample must match its recorded checksum
        recorded = committed.with_name(committed.name + ".sha256").read_text().split()[0]
        assert hashlib.sha256(committed.read_bytes()).hexdigest() == recorded


def test_installed_layout_runs_the_engine_and_finds_the_registry(tmp_path):
    """Mimic CMake's install: module file, logic and engine side by side in one folder."""
    scripted = tmp_path / "qt-scripted-modules"
    shutil.copytree(MODULE_DIR, scripted, ignore=shutil.ignore_patterns("__pycache__", "CMakeLists.txt"))
    shutil.copytree(REPO / "SpineSegDiffLib", scripted / "SpineSegDiffLib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    from SpineSegDiffSlicerLib.process_runner import EngineProcess, python_environment

    env = python_environment(scripted, base={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    code = ("import SpineSegDiffLib, json; from SpineSegDiffLib.model import registry; "
            "print(json.dumps({'engine': SpineSegDiffLib.__file__, 'models': [e.id for e in registry.load_registry()]}))")
    records = []
    proc = EngineProcess([sys.executable, "-c", code], records.append, lambda r: None, env=env,
                         cwd=str(tmp_path))
    proc.start()
    result = proc.wait(60)
    assert result.ok, result.stderr
    assert Path(records[0]["engine"]).resolve().is_relative_to(scripted.resolve())
    assert records[0]["models"], "the bundled registry (package data) should list at least one model"


def _widget_method(name: str) -> ast.FunctionDef:
    widget = next(n for n in _module_tree().body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffWidget")
    return next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_setup_connects_the_new_panel_controls():
    """Edit in Segment Editor, DICOM SEG export, the measurements table, device line and caches."""
    setup = ast.unparse(_widget_method("setup"))
    for widget, signal, slot in [("editButton", "clicked(bool)", "onEditInSegmentEditor"),
                                 ("exportDicomSegButton", "clicked(bool)", "onExportDicomSeg"),
                                 ("measurementsTableView", "clicked(QModelIndex)", "onMeasurementClicked"),
                                 ("deviceComboBox", "currentIndexChanged(int)", "onDeviceChosen")]:
        assert f"self.ui.{widget}.connect('{signal}', self.{slot})" in setup, widget
    for widget, kind in [("clearModelCacheButton", "models"), ("clearSampleCacheButton", "ensembles")]:
        assert f"self.ui.{widget}.connect('clicked(bool)', lambda: self.onClearCache('{kind}'))" in setup
    assert "self.refreshEngineInfo()" in setup  # the device line and cache sizes are filled at start
    # the logic behind each control is the tested SlicerLib function
    logic = ast.unparse(next(n for n in _module_tree().body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffLogic"))
    for call in ("setup_editor_node(", "dicom_export.export_dicom_seg(", "level_point_ras(", "engine_info.start_info(",
                 "no_cache=not parameterNode.useSampleCache", "measurements=parameterNode.measurements"):
        assert call in logic, call
    bound = {_property(w, "SlicerParameterName") for w in _ui_widgets().values()}
    assert {"useSampleCache", "measurements"} <= bound
    assert "patient images" in (_property(_ui_widgets()["cachesNoteLabel"], "text") or "")


def test_terminology_is_loaded_at_startup():
    tree = _module_tree()
    module_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiff")
    assert "slicer.app.connect('startupCompleted()', onStartupCompleted)" in ast.unparse(module_cls)
    startup = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "onStartupCompleted")
    assert _calls(startup, "loadTerminology") and _calls(startup, "registerSampleData")
    load = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loadTerminology")
    assert "terminology.load_terminology(slicer.modules.terminologies.logic(), MODULE_DIR)" in ast.unparse(load)


def test_user_facing_strings_are_translatable():
    """As Slicer's own modules: `from slicer.i18n import tr as _` (with a fallback for older
    Slicer), and no bare string literal where the user reads it."""
    tree = _module_tree()
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "from slicer.i18n import tr as _" in source and "except ImportError:" in source
    shown_by = {"tryWithErrorDisplay", "errorDisplay", "confirmOkCancelDisplay", "getOpenFileName",
                "getSaveFileName", "delayDisplay"}
    bare = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in ("text", "toolTip")
                                                for t in node.targets):
            if isinstance(node.value, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(node.value, "value", ""), str):
                bare.append(ast.unparse(node))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in shown_by:
            bare += [ast.unparse(node) for a in node.args[:3] if isinstance(a, ast.JoinedStr)
                     or (isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.strip(" .*()") != "")
                     and not a.value.endswith(".dcm")]
    for name in ("title", "helpText", "acknowledgementText"):
        assert re.search(rf"self\.parent\.{name} = _\(", source), name
    assert bare == [], f"user-facing strings not wrapped in _(): {bare}"
    # the helpers whose texts the panel shows (dialogs, device line, cache note) mark them too
    for helper in ("dependencies.py", "engine_info.py"):
        text = (LOGIC_DIR / helper).read_text(encoding="utf-8")
        assert "from slicer.i18n import tr as _" in text and "except ImportError:" in text, helper
    dialogs = (LOGIC_DIR / "dependencies.py").read_text(encoding="utf-8")
    assert not re.search(r'(errorDisplay|confirmOkCancelDisplay|confirmYesNoDisplay)\(\s*f?"', dialogs)


def test_heavy_self_test_is_behind_a_switch():
    tree = ast.parse((LOGIC_DIR / "self_test.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpineSegDiffSelfTest")
    run = ast.unparse(next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "runTest"))
    assert run.index("self.test_PanelLogic()") < run.index("if not heavy_test_enabled():") < run.index(
        "self.test_SegmentRerunExport()")
    switch = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "heavy_test_enabled")
    namespace = {"os": os, "HEAVY_TEST_VARIABLE": "SPINESEGDIFF_TEST_LOGIC"}
    exec(compile(ast.Module([switch], []), "self_test", "exec"), namespace)
    enabled = namespace["heavy_test_enabled"]
    assert not enabled({}) and not enabled({"SPINESEGDIFF_TEST_LOGIC": "0"})
    assert enabled({"SPINESEGDIFF_TEST_LOGIC": "1"}) and enabled({"SPINESEGDIFF_TEST_LOGIC": "yes"})
