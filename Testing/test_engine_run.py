"""One segmentation run as the Logic starts it (SpineSegDiffSlicerLib.engine_run): the input written
by Slicer's own writer, a real engine process, the outputs imported into a slicer-core scene, and the
work folder removed whatever happened."""

from __future__ import annotations

import sys

import pytest
import slicer

from conftest import REPO
from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.engine_run import INPUT_NAME, start_segmentation, wait_for

RUN_TIMEOUT_S = 300


def _scene_and_volume(phantom_folder):
    scene = slicer.vtkMRMLScene()
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    volume = volumes.load_volume(scene, phantom_folder / "images" / "1_t2.mha")
    return scene, segmentations_logic, volume


def _start(scene, segmentations_logic, volume, work_dir, model, outcomes, imported, **options):
    work_dir.mkdir()
    # what slicer.util.exportNode (write_input_volume, which needs the Slicer application) does
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(work_dir / INPUT_NAME))
    assert storage.WriteData(volume)
    return start_segmentation(scene, segmentations_logic, volume, work_dir, model=str(model), samples=1, steps=2,
                              device="cpu", python_executable=sys.executable, engine_dir=REPO,
                              on_finished=outcomes.append, on_imported=imported.append, **options)


@pytest.mark.slow
def test_a_run_imports_its_results_and_removes_the_work_folder(tmp_path, phantom_folder, tiny_model):
    scene, segmentations_logic, volume = _scene_and_volume(phantom_folder)
    outcomes, imported = [], []
    process = _start(scene, segmentations_logic, volume, tmp_path / "work", tiny_model, outcomes, imported)
    wait_for(process, RUN_TIMEOUT_S)
    assert len(outcomes) == 1 and outcomes[0].ok, outcomes[0].message
    assert [row.key for row in sorted(outcomes[0].reviewRows, key=lambda r: r.key)] == sorted(s.key for s in STRUCTURES)
    assert len(imported) == 1 and imported[0].segmentation_node.GetScene() is scene
    assert outcomes[0].seconds > 0
    assert not (tmp_path / "work").exists()


def test_a_failed_run_changes_nothing_and_removes_the_work_folder(tmp_path, phantom_folder):
    scene, segmentations_logic, volume = _scene_and_volume(phantom_folder)
    outcomes, imported = [], []
    missing = tmp_path / "no-such-model.zip"
    process = _start(scene, segmentations_logic, volume, tmp_path / "work", missing, outcomes, imported)
    wait_for(process, RUN_TIMEOUT_S)
    assert len(outcomes) == 1 and not outcomes[0].ok and not outcomes[0].cancelled
    assert "no-such-model.zip" in outcomes[0].message
    assert imported == [] and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_levels_and_measurements_become_a_table_and_no_cache_writes_no_samples(tmp_path, phantom_folder, tiny_model,
                                                                                 monkeypatch):
    from SpineSegDiffSlicerLib.measurements_table import COLUMNS, level_point_ras

    monkeypatch.setenv("SPINESEGDIFF_CACHE", str(tmp_path / "cache" / "models"))  # the engine inherits it
    scene, segmentations_logic, volume = _scene_and_volume(phantom_folder)
    outcomes, imported = [], []
    process = _start(scene, segmentations_logic, volume, tmp_path / "work", tiny_model, outcomes, imported,
                     measurements=True, no_cache=True)
    wait_for(process, RUN_TIMEOUT_S)
    assert outcomes[0].ok, outcomes[0].message
    table = imported[0].measurements_table
    assert table is not None and table.GetScene() is scene and table.GetNumberOfRows() > 0
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(COLUMNS)
    rows_with_level = [r for r in range(table.GetNumberOfRows()) if level_point_ras(table, r) is not None]
    notes = [table.GetCellText(r, COLUMNS.index("note")) for r in range(table.GetNumberOfRows())]
    assert rows_with_level or all(notes), "a table without levels must say why in every row"
    assert not (tmp_path / "cache" / "ensembles").exists() or not any((tmp_path / "cache" / "ensembles").iterdir())
