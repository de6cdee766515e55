"""End to end: real `spinesegdiff segment` runs, started the way the Slicer Logic starts them
(input written by Slicer's storage node, `segment_command`, `EngineProcess`), imported into a
real MRML scene (slicer-core); re-run, cancel, export of an edited result and retraining on it.

The engine runs that several tests share are made once per module (two inputs run side by
side in the fixture), so the file stays well under a minute after the tiny model exists.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from conftest import REPO, run_cli
from SpineSegDiffLib.data.dataset_format import load_case, read_dataset
from SpineSegDiffLib.core.labels import BY_KEY, STRUCTURES
from SpineSegDiffLib.model.modelfile import load_model_file
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.export import export_for_training
from SpineSegDiffSlicerLib.results import import_results
from SpineSegDiffSlicerLib.process_runner import EngineProcess, Result, python_environment, segment_command
from SpineSegDiffSlicerLib.segments import oriented_mask
from engine_fixtures import (SceneKit, process_alive, wait_until, assert_project_segments, export_with_slicer, make_scene,
                             scene_state)

SAMPLES, STEPS = 2, 2  # the smallest real ensemble: enough to exercise every stage
RUN_TIMEOUT_S = 180

posix_only = pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX here")


# -- inputs: phantom anatomy resampled onto awkward but realistic geometries -------------------
def _rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues), so no extra dependency is needed."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


# name -> (direction columns i, j, k in LPS, spacing, size); each resamples a phantom
INPUT_GEOMETRIES = {
    # voxel axes permuted (i anterior->posterior, j superior->inferior, k right-left slices),
    # 0.6 x 0.6 x 4 mm, tilted 15 degrees about an axis that is none of the voxel axes
    "oblique": (_rotation((1, 1, 1), 15) @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
                (0.6, 0.6, 4.0), (300, 360, 10)),
    # axis aligned and left-handed as SPIDER files are, every spacing different
    "anisotropic": (np.diag([1.0, 1.0, -1.0]), (3.1, 0.55, 1.3), (12, 330, 170)),
}


def make_input(phantom_folder: Path, geometry: str, path: Path) -> Path:
    """A phantom image resampled (linear) onto ``INPUT_GEOMETRIES[geometry]``, centred on it."""
    source = sitk.ReadImage(str(phantom_folder / "images" / "1_t2.mha"))
    centre = np.array(source.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in source.GetSize()]))
    direction, spacing, size = INPUT_GEOMETRIES[geometry]
    reference = sitk.Image(list(size), sitk.sitkInt16)
    reference.SetSpacing(spacing)
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((centre - direction @ (np.array(spacing) * (np.array(size) - 1) / 2)).tolist())
    sitk.WriteImage(sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkInt16),
                    str(path))
    return path


# -- running the engine as the Slicer Logic does -------------------------------------------------
def write_input_like_slicer(volume_node, path: Path) -> Path:
    """What `slicer.util.exportNode` does: Slicer's storage node writes the volume node's voxels."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(volume_node), f"Slicer could not write {path}"
    return path


@dataclass
class EngineRun:
    process: EngineProcess
    work_dir: Path
    input_path: Path
    outputs: dict[str, str]
    progress: list[dict] = field(default_factory=list)
    finished: list[Result] = field(default_factory=list)


def start_segment_run(volume_node, model: Path, work_dir: Path, samples: int = SAMPLES, steps: int = STEPS,
                      on_finished: Callable[[EngineRun, Result], None] | None = None) -> EngineRun:
    """Write the input, build the contract's command line and start it in its own process group.

    ``on_finished(run, result)`` runs inside ``poll()``/``wait()``, as the Logic's callback does.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    input_path = write_input_like_slicer(volume_node, work_dir / "input.nrrd")
    command, outputs = segment_command(sys.executable, input_path, str(model), samples, steps, "cpu", work_dir)
    progress: list[dict] = []
    finished: list[Result] = []

    def finish(result: Result) -> None:
        finished.append(result)
        if on_finished is not None:
            on_finished(run, result)

    process = EngineProcess(command, on_progress=progress.append, on_finished=finish,
                            env=python_environment(REPO), cwd=work_dir)
    run = EngineRun(process, work_dir, input_path, outputs, progress, finished)
    process.start()
    return run


def import_when_ok(kit: SceneKit, volume_node, imported: list):
    """The Logic's finish step: a successful run's files go into the scene, anything else is dropped."""
    def finish(run: EngineRun, result: Result) -> None:
        if result.ok:
            imported.append(import_run(kit, volume_node, run))
    return finish


def import_run(kit: SceneKit, volume_node, run: EngineRun):
    """The Logic's import step: the run's three files into the scene for ``volume_node``."""
    return import_results(kit.scene, kit.segmentations_logic, volume_node, run.outputs["segmentation"],
                          run.outputs["uncertainty"], run.finished[0].summary_path)


def wait_ok(run: EngineRun) -> EngineRun:
    result = run.process.wait(RUN_TIMEOUT_S)
    assert result.ok, f"engine failed: {result.message}\n{result.stderr[-2000:]}"
    return run


@dataclass
class SharedRun:
    source_path: Path  # the file the user loaded
    run: EngineRun


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory, phantom_folder, tiny_model) -> dict[str, SharedRun]:
    """One finished engine run per input geometry, the two started side by side."""
    root = tmp_path_factory.mktemp("end_to_end")
    scratch = slicer.vtkMRMLScene()  # the scene the "user" loaded the files into
    started = {}
    for geometry in INPUT_GEOMETRIES:
        source = make_input(phantom_folder, geometry, root / f"{geometry}.nii.gz")
        volume = volumes.load_volume(scratch, source)
        started[geometry] = SharedRun(source, start_segment_run(volume, tiny_model, root / f"run_{geometry}"))
    for shared in started.values():
        wait_ok(shared.run)
    return started


def _load(kit: SceneKit, shared: SharedRun):
    return volumes.load_volume(kit.scene, shared.source_path)


def _labels_on_file_grid(node, file_image: sitk.Image) -> np.ndarray:
    """A node's voxels re-indexed (never resampled) onto a file's grid; fails if grids differ."""
    array = volumes.array_on_grid(volumes.array_from_node(node), volumes.ijk_to_ras(node),
                                  volumes.sitk_ijk_to_ras(file_image), file_image.GetSize())
    assert array is not None, f"'{node.GetName()}' is not on the voxel grid of the engine's file"
    return array


def _assert_on_volume_grid(node, volume_node) -> None:
    assert volumes.same_grid(volumes.ijk_to_ras(node), volumes.node_dimensions(node),
                             volumes.ijk_to_ras(volume_node), volumes.node_dimensions(volume_node))


def _process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


# -- 1. import of real results: segments, geometry, uncertainty display --------------------------
@pytest.mark.parametrize("geometry", sorted(INPUT_GEOMETRIES))
def test_real_run_imports_voxel_exact_on_the_input_geometry(shared_runs, geometry):
    shared = shared_runs[geometry]
    run = shared.run
    assert [r["stage"] for r in run.progress][-1] == "done"
    kit = make_scene()
    volume = _load(kit, shared)
    imported = import_run(kit, volume, run)

    # the engine wrote its outputs on the exact geometry of the input it was given
    engine_input = sitk.ReadImage(str(run.input_path))
    engine_labels_image = sitk.ReadImage(run.outputs["segmentation"])
    engine_uncertainty_image = sitk.ReadImage(run.outputs["uncertainty"])
    for written in (engine_labels_image, engine_uncertainty_image):
        assert written.GetSize() == engine_input.GetSize()
        for what in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(written, what)(), getattr(engine_input, what)(), atol=1e-5)
    engine_labels = sitk.GetArrayFromImage(engine_labels_image)
    found = set(np.unique(engine_labels).tolist())
    assert found <= {0, 1, 2, 3} and {1, 2, 3} <= found, f"every structure must be exercised, got {found}"

    # the segments, exported by Slicer on the volume's grid, are the engine's file voxel for voxel
    exported = export_with_slicer(kit, imported.segmentation_node, volume)
    _assert_on_volume_grid(exported, volume)
    np.testing.assert_array_equal(_labels_on_file_grid(exported, engine_labels_image), engine_labels)
    _assert_on_volume_grid(imported.uncertainty_node, volume)
    np.testing.assert_array_equal(_labels_on_file_grid(imported.uncertainty_node, engine_uncertainty_image),
                                  sitk.GetArrayFromImage(engine_uncertainty_image))

    assert_project_segments(imported.segmentation_node)
    # the review table comes from the run's own summary, most uncertain first
    rows = imported.review_rows
    assert {r.key for r in rows} == {s.key for s in STRUCTURES}
    assert [r.mean_uncertainty for r in rows] == sorted((r.mean_uncertainty for r in rows), reverse=True)


@pytest.mark.parametrize("app_color_tables,expected", [(False, "vtkMRMLPETProceduralColorNodePET-Heat"),
                                                       (True, "vtkMRMLColorTableNodeFileViridis.txt")])
def test_real_uncertainty_gets_its_display_and_colour_node(shared_runs, app_color_tables, expected):
    shared = shared_runs["oblique"]
    kit = make_scene(app_color_tables)
    uncertainty = import_run(kit, _load(kit, shared), shared.run).uncertainty_node
    display = uncertainty.GetDisplayNode()
    assert display is not None and display.GetScene() is kit.scene
    assert display.GetColorNodeID() == expected
    assert display.GetColorNode() is kit.scene.GetNodeByID(expected)
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)


# -- 2. a second run replaces the first ---------------------------------------------------------
def test_rerun_replaces_results_with_the_same_nodes(shared_runs, tiny_model, tmp_path):
    shared = shared_runs["oblique"]
    kit = make_scene()
    volume = _load(kit, shared)
    first = import_run(kit, volume, shared.run)
    ids_before = sorted(node_id for node_id, _ in scene_state(kit.scene))
    counts_before = {c: kit.scene.GetNumberOfNodesByClass(c)
                     for c in ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode",
                               "vtkMRMLScalarVolumeDisplayNode", "vtkMRMLSegmentationDisplayNode")}
    imported = []
    rerun = start_segment_run(volume, tiny_model, tmp_path / "rerun", samples=SAMPLES + 1,
                              on_finished=import_when_ok(kit, volume, imported))
    wait_ok(rerun)
    [second] = imported
    assert sorted(node_id for node_id, _ in scene_state(kit.scene)) == ids_before
    assert {c: kit.scene.GetNumberOfNodesByClass(c) for c in counts_before} == counts_before
    assert second.segmentation_node.GetID() == first.segmentation_node.GetID()
    assert second.uncertainty_node.GetID() == first.uncertainty_node.GetID()
    assert second.segmentation_node.GetSegmentation().GetNumberOfSegments() == len(STRUCTURES)
    labels_file = sitk.ReadImage(rerun.outputs["segmentation"])
    exported = export_with_slicer(kit, second.segmentation_node, volume)
    np.testing.assert_array_equal(_labels_on_file_grid(exported, labels_file), sitk.GetArrayFromImage(labels_file))
    uncertainty_file = sitk.ReadImage(rerun.outputs["uncertainty"])
    np.testing.assert_array_equal(_labels_on_file_grid(second.uncertainty_node, uncertainty_file),
                                  sitk.GetArrayFromImage(uncertainty_file))


# -- 3. cancel --------------------------------------------------------------------------------------
@posix_only
def test_cancel_kills_the_engine_tree_and_leaves_scene_and_folder_untouched(shared_runs, tiny_model, tmp_path):
    shared = shared_runs["oblique"]
    kit = make_scene()
    volume = _load(kit, shared)
    import_run(kit, volume, shared.run)  # earlier results are on screen; they must survive as they are
    before = scene_state(kit.scene)
    imported = []
    # many samples and steps: uncancelled this would run far longer than the test allows
    run = start_segment_run(volume, tiny_model, tmp_path / "cancelled", samples=12, steps=20,
                            on_finished=import_when_ok(kit, volume, imported))
    run.process.grace_period_s = 2.0
    pid = run.process.pid
    assert wait_until(lambda: run.process.poll() and bool(run.progress), timeout=60), "no progress line came"
    assert run.process.running and _process_group(pid), "the engine ended before it could be cancelled"
    cancelled_at = time.monotonic()
    run.process.cancel()
    result = run.process.wait(30)
    assert time.monotonic() - cancelled_at < 10
    assert result.cancelled and not result.ok and result.returncode != 0 and result.summary_path is None
    assert run.finished == [result] and imported == []
    assert "done" not in [r["stage"] for r in run.progress]
    assert not process_alive(pid)
    assert wait_until(lambda: not _process_group(pid), timeout=10), f"left running: {_process_group(pid)}"
    assert scene_state(kit.scene) == before  # same node IDs, same count, no node modified
    left = sorted(p.name for p in run.work_dir.iterdir() if p != run.input_path)
    assert left == [], f"cancel left files behind: {left}"


# -- 4. edit, export, retrain -------------------------------------------------------------------
def test_edited_result_exports_exactly_and_trains_a_model(shared_runs, tiny_model, tmp_path):
    shared = shared_runs["oblique"]
    kit = make_scene()
    volume = _load(kit, shared)
    segmentation_node = import_run(kit, volume, shared.run).segmentation_node
    labels = volumes.array_from_node(export_with_slicer(kit, segmentation_node, volume))
    # paint a block of spinal canal over whatever was there (Segment Editor: overwrite others)
    k, j, i = (n // 2 for n in labels.shape)
    painted = labels.copy()
    painted[k - 1:k + 2, j - 20:j + 20, i - 15:i + 15] = BY_KEY["spinal_canal"].value
    assert (painted != labels).sum() > 100, "the paint stroke must change something"
    for s in STRUCTURES:
        kit.segmentations_logic.SetBinaryLabelmapToSegment(
            oriented_mask(painted == s.value, volume), segmentation_node, s.key,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    dataset = tmp_path / "dataset"
    nodes_before = kit.scene.GetNumberOfNodes()
    label_path = export_for_training(kit.scene, kit.segmentations_logic, segmentation_node, volume, dataset,
                                     {"source": str(shared.source_path), "steps": STEPS,
                                      "exported_by": "SpineSegDiff Slicer module"})
    assert kit.scene.GetNumberOfNodes() == nodes_before
    [record] = read_dataset(dataset)
    assert record.label_path == label_path
    image, label = load_case(record)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), painted)
    np.testing.assert_array_equal(  # and what Slicer itself exports from the edited segments
        sitk.GetArrayFromImage(label), volumes.array_from_node(export_with_slicer(kit, segmentation_node, volume)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volumes.array_from_node(volume))
    model = load_model_file(tiny_model)
    assert record.provenance["edited_by_person"] is True
    assert (record.provenance["model_id"], record.provenance["model_version"]) == (model.id, model.version)
    assert record.provenance["samples"] == SAMPLES
    assert set(record.annotated) == {s.key for s in STRUCTURES}

    out = tmp_path / "retrained"
    done = run_cli("train", dataset, "--out", out, "--epochs", "1", "--features", "tiny", "--grid-size", "64",
                   "--grid-spacing-mm", "4", "--batch-size", "4", "--val-fraction", "0", "--device", "cpu",
                   "--progress", "none", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    retrained = load_model_file(out / "model.zip")
    assert retrained.state_dict and all(np.isfinite(t.float().numpy()).all() for t in retrained.state_dict.values())
    assert retrained.metadata["preprocessing"]["grid"]["size"] == 64
