"""The sample slider's step inside Slicer's process (SpineSegDiffSlicerLib.cached_step): after an
engine run drew the samples, lowering S is fused in the GUI's own process, with neither torch,
MONAI nor scipy importable there, and shows exactly what a fresh `--no-cache` engine run writes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk
import slicer

from conftest import REPO, run_cli
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.engine_run import INPUT_NAME, start_segmentation, wait_for

# Slicer's process as the module sees it, minus torch, MONAI and scipy
STEP = """
import json, sys
sys.modules["torch"] = None
sys.modules["monai"] = None
sys.modules["scipy"] = None
sys.path[:0] = [{repo!r}, {module_dir!r}]
import SimpleITK as sitk
import slicer
import vtk
from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffSlicerLib import volumes
from SpineSegDiffSlicerLib.cached_step import start_cached_step

scene = slicer.vtkMRMLScene()
logic = slicer.vtkSlicerSegmentationsModuleLogic()
logic.SetMRMLScene(scene)
volume = volumes.load_volume(scene, {image!r})
outcomes, imported = [], []
step = start_cached_step(scene, logic, volume, model={model!r}, samples={samples}, steps=2, device="cpu",
                         on_finished=outcomes.append, on_imported=imported.append)
if step is None:
    print(json.dumps({{"served": False}}))
    sys.exit(0)
step.wait_or_cancel(60, "the step")
ids = vtk.vtkStringArray()
for s in STRUCTURES:
    ids.InsertNextValue(s.key)
labels = slicer.vtkMRMLLabelMapVolumeNode()
scene.AddNode(labels)
assert logic.ExportSegmentsToLabelmapNode(imported[0].segmentation_node, ids, labels, volume,
                                          slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
sitk.WriteImage(volumes.sitk_from_node(labels), {out!r} + "/labels.nii")
sitk.WriteImage(volumes.sitk_from_node(imported[0].uncertainty_node), {out!r} + "/unc.nii")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai", "scipy") and sys.modules[m] is not None)
print(json.dumps({{"served": True, "ok": outcomes[0].ok, "message": outcomes[0].message,
                  "rows": len(outcomes[0].reviewRows), "loaded": loaded}}))
"""


def _step_in_slicer_process(image, model, samples, out):
    out.mkdir(parents=True, exist_ok=True)
    script = STEP.format(repo=str(REPO), module_dir=str(REPO / "SpineSegDiff"), image=str(image), model=str(model),
                         samples=samples, out=str(out))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _on_grid_of(path, reference_path):
    reference = sitk.ReadImage(str(reference_path))
    return sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(path)), reference, sitk.Transform(),
                                                sitk.sitkNearestNeighbor))


def test_lowering_s_runs_in_slicers_process_without_torch_and_equals_a_fresh_run(tmp_path, phantom_folder,
                                                                                 tiny_model):
    image = phantom_folder / "images" / "2_t2.mha"
    # before any engine run nothing is cached: the Logic starts the engine process
    assert _step_in_slicer_process(image, tiny_model, 2, tmp_path / "before") == {"served": False}

    scene = slicer.vtkMRMLScene()
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    volume = volumes.load_volume(scene, image)
    work = tmp_path / "work"
    work.mkdir()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()  # what write_input_volume does in the app
    storage.SetFileName(str(work / INPUT_NAME))
    assert storage.WriteData(volume)
    outcomes = []
    process = start_segmentation(scene, segmentations_logic, volume, work, model=str(tiny_model), samples=3,
                                 steps=2, device="cpu", python_executable=sys.executable, engine_dir=REPO,
                                 on_finished=outcomes.append)
    wait_for(process, 300)
    assert outcomes[0].ok, outcomes[0].message

    step = _step_in_slicer_process(image, tiny_model, 2, tmp_path / "step")
    assert step["served"] and step["ok"] and step["rows"] == 3, step
    assert step["loaded"] == []  # neither torch, MONAI nor scipy in Slicer's process

    fresh = tmp_path / "fresh"
    run = run_cli("segment", str(image), "--model", str(tiny_model), "--device", "cpu", "--samples", "2",
                  "--steps", "2", "--no-cache", "--output-segmentation", str(fresh / "seg.nii"),
                  "--output-uncertainty", str(fresh / "unc.nii"), "--progress", "none")
    assert run.returncode == 0, run.stderr[-2000:]
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(fresh / "seg.nii")))
    assert expected.any()
    assert np.array_equal(_on_grid_of(tmp_path / "step" / "labels.nii", fresh / "seg.nii"), expected)
    assert np.array_equal(_on_grid_of(tmp_path / "step" / "unc.nii", fresh / "unc.nii"),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(fresh / "unc.nii"))))
