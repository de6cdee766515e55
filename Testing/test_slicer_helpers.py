"""The Slicer module's pure helpers, moved out of SpineSegDiff.py so that pytest reaches them:
progress texts, the dependency check, the engine path, the model choices and their defaults."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from SpineSegDiffSlicerLib import dependencies, engine_path, formatting, model_choices
from SpineSegDiffSlicerLib.outcome import SegmentationOutcome
from SpineSegDiffSlicerLib.sample_data import sample_checksum

MODULE_DIR = REPO / "SpineSegDiff"


# -- formatting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [(None, "unknown time"), (0.4, "0 s"), (42, "42 s"),
                                           (59.6, "1 min 0 s"), (65, "1 min 5 s"), (3725, "62 min 5 s")])
def test_format_duration(seconds, text):
    assert formatting.format_duration(seconds) == text


def test_describe_progress_names_stage_sample_step_and_time_left():
    record = {"stage": "sample", "fraction": 0.4, "sample": 2, "step": 7, "seconds_left": 65}
    assert formatting.describe_progress(record) == "Sampling (sample 2, step 7) - about 1 min 5 s left"
    assert formatting.describe_progress({"stage": "write", "seconds_left": None}) == "Writing results"
    assert formatting.describe_progress({"stage": "new-stage"}) == "new-stage"  # an engine newer than the panel
    assert formatting.describe_progress({}) == "Working"


def test_every_stage_of_the_segment_contract_has_a_panel_name():
    # the stages `spinesegdiff segment --progress json` reports (docs/architecture.md)
    assert {"load", "grid", "encode", "sample", "fuse", "write", "done"} <= set(formatting.STAGE_NAMES)


def test_review_cells():
    from SpineSegDiffSlicerLib.review import ReviewRow

    found = ReviewRow("discs", "Intervertebral discs", 12.345, 0.23456, (1.0, 2.0, 3.0))
    assert formatting.review_cells(found) == (("Intervertebral discs", "12.3", "0.235"),
                                              "Click to jump to where this structure is most uncertain")
    absent = ReviewRow("discs", "Intervertebral discs", 0.0, 0.0, None)
    assert formatting.review_cells(absent)[1] == "Not found in this volume"


def test_every_panel_device_is_accepted_by_the_engine_command(tmp_path):
    from SpineSegDiffLib.core.device_names import DEVICE_NAMES
    from SpineSegDiffSlicerLib.process_runner import segment_command

    for device in DEVICE_NAMES:
        command, _ = segment_command("/py", tmp_path / "in.nrrd", "demo", 1, 1, device, tmp_path)
        assert command[command.index("--device") + 1] == device
    assert "gpu" not in DEVICE_NAMES  # an alias, not a second entry in the menu


# -- dependencies -------------------------------------------------------------------------------

def _requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nmonai>=1.6.1,<2  # a range\nSimpleITK>=2.5.7,<3\npillow>=13.0.0,<14\n"
                    "-c constraints.txt\n\n", encoding="utf-8")
    return path


def test_requirements_are_read_as_ranges_skipping_comments_and_options(tmp_path):
    requirements = dependencies.load_requirements(_requirements(tmp_path))
    assert [str(r) for r in requirements] == ["monai<2,>=1.6.1", "SimpleITK<3,>=2.5.7", "pillow<14,>=13.0.0"]


@pytest.mark.parametrize("line, name", [("pillow>=13.0.0", "PIL"), ("SimpleITK>=2.5.7,<3", "SimpleITK"),
                                        ("monai<2", "monai"), ("other==1", "other")])
def test_import_name_of(line, name):
    assert dependencies.import_name_of(line) == name


def test_missing_requirements_accept_any_version_in_range_and_keep_slicers_simpleitk(tmp_path):
    requirements = _requirements(tmp_path)
    # a newer monai another extension installed is kept; pillow 12 is below the range, 14 above it
    installed = {"monai": "1.9.0", "pillow": "12.0.0"}  # SimpleITK: Slicer's own build, no wheel metadata
    missing = dependencies.missing_requirements(requirements, installed_version=installed.get,
                                                importable=lambda name: name == "SimpleITK")
    assert [r.name for r in missing] == ["pillow"]
    installed = {"monai": "2.0.0", "pillow": "13.2.1"}
    missing = dependencies.missing_requirements(requirements, installed_version=installed.get,
                                                importable=lambda name: False)
    assert [r.name for r in missing] == ["monai", "SimpleITK"]  # without Slicer's SimpleITK it is installed


@pytest.mark.parametrize("version, problem", [
    (None, "torch (PyTorch) is not installed"), ("2.1.2", "torch 2.1.2 is too old; SpineSegDiff needs torch>=2.4"),
    ("2.4.0", None), ("2.13.0+cu128", None), ("2.5.0.dev20240801", None)])
def test_torch_version_is_checked_not_only_its_presence(version, problem):
    assert dependencies.torch_problem({"torch": version}.get) == problem


def test_minimum_slicer_version():
    assert dependencies.slicer_version_problem(5, 8) is None and dependencies.slicer_version_problem(6, 0) is None
    assert "needs Slicer 5.8 or newer (this is 5.6)" in dependencies.slicer_version_problem(5, 6)


def test_module_requirements_are_met_by_the_project_environment():
    # the project's venv holds the tested versions, inside every range: nothing would be installed
    assert dependencies.missing_requirements(MODULE_DIR / "Resources" / "requirements.txt") == []
    assert dependencies.torch_problem() is None


# -- engine path --------------------------------------------------------------------------------

def test_engine_directory_in_the_source_tree_and_installed_layout(tmp_path):
    assert engine_path.engine_directory(MODULE_DIR) == REPO.resolve()
    installed = tmp_path / "qt-scripted-modules"
    (installed / "SpineSegDiffLib").mkdir(parents=True)
    (installed / "SpineSegDiffLib" / "__init__.py").write_text("", encoding="utf-8")
    assert engine_path.engine_directory(installed) == installed.resolve()
    with pytest.raises(RuntimeError, match="reinstall the SpineSegDiff extension"):
        engine_path.engine_directory(tmp_path / "empty" / "module")


def test_ensure_engine_importable_adds_the_folder_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != REPO.resolve()])
    before = len(sys.path)
    assert engine_path.ensure_engine_importable(MODULE_DIR) == REPO.resolve()
    engine_path.ensure_engine_importable(MODULE_DIR)
    assert len(sys.path) == before + 1 and sys.path[0] == str(REPO.resolve())


def test_reload_forgets_only_the_projects_packages():
    loaded = ["SpineSegDiffLib", "SpineSegDiffLib.core.labels", "SpineSegDiffSlicerLib.review",
              "SpineSegDiffLibrary", "slicer", "numpy.linalg"]
    assert engine_path.reloadable_modules(loaded) == ["SpineSegDiffLib", "SpineSegDiffLib.core.labels",
                                                      "SpineSegDiffSlicerLib.review"]


# -- outcome and sample data --------------------------------------------------------------------

def test_segmentation_outcome():
    ok = SimpleNamespace(ok=True, cancelled=False, message="", stdout_log=["a", "b"], stderr="warning: x")
    assert SegmentationOutcome(ok, ["row"]).ok and SegmentationOutcome(ok).log == "a\nb\nwarning: x"
    failed_import = SegmentationOutcome(ok, message="summary missing")
    assert not failed_import.ok and failed_import.message == "summary missing"
    cancelled = SimpleNamespace(ok=False, cancelled=True, message="cancelled", stdout_log=[], stderr="")
    assert SegmentationOutcome(cancelled).cancelled and SegmentationOutcome(cancelled).message == "cancelled"
    assert not SegmentationOutcome(None).ok and SegmentationOutcome(None).log == ""


def test_sample_checksum(tmp_path):
    sample = tmp_path / "s.nrrd"
    assert sample_checksum(sample) is None
    (tmp_path / "s.nrrd.sha256").write_text("ABCDEF  s.nrrd\n", encoding="utf-8")
    assert sample_checksum(sample) == "abcdef"
    (tmp_path / "s.nrrd.sha256").write_text("", encoding="utf-8")
    assert sample_checksum(sample) is None


# -- model choices ------------------------------------------------------------------------------

def _bundled_defaults() -> tuple[int, int]:
    from SpineSegDiffLib.model import registry

    with zipfile.ZipFile(registry.resolve_model("spinesegdiff-demo")) as archive:
        found = json.loads(archive.read("model.json"))["inference_defaults"]
    return found["samples"], found["steps"]


def test_available_models_lists_the_bundled_model():
    ids = [model_id for model_id, _ in model_choices.available_models()]
    assert "spinesegdiff-demo" in ids and len(ids) == len(set(ids))


def test_model_defaults_come_from_model_json(tmp_path):
    assert model_choices.model_defaults("spinesegdiff-demo") == _bundled_defaults()
    # a model file given by path
    from SpineSegDiffLib.model import registry

    copy = tmp_path / "m.zip"
    shutil.copy(registry.resolve_model("spinesegdiff-demo"), copy)
    assert model_choices.model_defaults(str(copy)) == _bundled_defaults()


def test_model_defaults_of_a_damaged_file_fall_back_with_a_log_line(tmp_path, caplog):
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"not a zip")
    with caplog.at_level(logging.WARNING):
        defaults = model_choices.model_defaults(str(damaged))
    assert defaults == (model_choices.FALLBACK_SAMPLES, model_choices.FALLBACK_STEPS)
    assert any("damaged.zip" in r.getMessage() and "not a readable model file" in r.getMessage()
               for r in caplog.records)


def test_model_defaults_of_an_unknown_model_fall_back(caplog):
    with caplog.at_level(logging.INFO):
        defaults = model_choices.model_defaults("no-such-model")
    assert defaults == (model_choices.FALLBACK_SAMPLES, model_choices.FALLBACK_STEPS)
    assert any("no-such-model" in r.getMessage() for r in caplog.records)
