"""SpineSegDiff: lumbar spine MRI segmentation with a diffusion model, inside 3D Slicer.

The module stays thin: the Widget binds the panel to a parameter node, the Logic builds
the engine's command line and runs it as a separate process (Slicer's own Python running
``python -m SpineSegDiffLib segment``), then hands the outputs to ``SpineSegDiffSlicerLib``
(MRML in/out, tested with pytest + slicer-core). A crash or a GPU out-of-memory in the
engine therefore never takes Slicer down, and Cancel kills the whole process tree.
"""

import logging
import pathlib
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from SpineSegDiffSlicerLib.engine_path import ensure_engine_importable, forget_modules

MODULE_DIR = pathlib.Path(__file__).resolve().parent
# Once, at import: the SpineSegDiffSlicerLib modules that use the engine can then import it.
ENGINE_DIR = ensure_engine_importable(MODULE_DIR)

from SpineSegDiffLib.core.device_names import DEVICE_NAMES  # noqa: E402  (needs the engine path)
from SpineSegDiffLib.core.errors import SpineSegDiffError  # noqa: E402
from SpineSegDiffSlicerLib import dependencies, model_choices  # noqa: E402
from SpineSegDiffSlicerLib.export import export_for_training, slicer_provenance  # noqa: E402
from SpineSegDiffSlicerLib.formatting import describe_progress, format_duration, review_cells  # noqa: E402
from SpineSegDiffSlicerLib.engine_run import INPUT_NAME, start_segmentation, wait_for  # noqa: E402
from SpineSegDiffSlicerLib.engine_run import python_executable, write_input_volume  # noqa: E402  # noqa: E402
from SpineSegDiffSlicerLib.outcome import SegmentationOutcome  # noqa: E402
from SpineSegDiffSlicerLib.review import jump_to, node_review_rows  # noqa: E402
from SpineSegDiffSlicerLib.sample_data import register_sample_data  # noqa: E402
from SpineSegDiffSlicerLib.self_test import SpineSegDiffSelfTest  # noqa: E402
from SpineSegDiffSlicerLib.uncertainty_display import show_overlay  # noqa: E402

RESOURCES_DIR = MODULE_DIR / "Resources"
SAMPLE_FILE = RESOURCES_DIR / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
SAMPLE_NAME = "SpineSegDiffPhantomT2"
DEMO_MODEL_ID = "spinesegdiff-demo"
POLL_INTERVAL_MS = 100


# -- Module ---------------------------------------------------------------------------


class SpineSegDiff(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineSegDiff"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSegDiff contributors"]
        self.parent.helpText = """
Segments lumbar spine MRI into spinal canal, vertebrae and intervertebral discs with a
conditional diffusion model (Diff-UNet style, 2D sagittal slices) and shows a voxel-wise
uncertainty map. Pick a volume and a model, press <b>Segment</b>: the model runs in a
background process (Cancel stops it). The <b>Review</b> table lists each structure's volume
and mean uncertainty, most uncertain first; click a row to jump to where the model is least
sure. Correct the segments in Segment Editor, then <b>Export</b> the case to a retraining
data set. Research software, not for clinical use.
"""
        self.parent.acknowledgementText = """
Method after SpineSegDiff (MIDL 2025, "Enhancing Low Back Pain Assessment with Diffusion
Models for Lumbar Spine MRI Segmentation") and Diff-UNet. Panel structure learned from the
Slicer scripted module template, SlicerNNUnet and SlicerMONAIAuto3DSeg.
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the bundled lumbar phantom in the Sample Data module."""
    register_sample_data(SAMPLE_FILE, SAMPLE_NAME, RESOURCES_DIR / "Icons" / "SpineSegDiff.png")


# -- Parameter node -------------------------------------------------------------------


@parameterNodeWrapper
class SpineSegDiffParameterNode:
    """Everything the panel shows, saved with the scene.

    inputVolume - the MRI to segment.
    modelId - a registry model id (or a .zip path) passed to ``--model``.
    samples, steps - ensemble size and DDIM steps (defaults come from the chosen model).
    samplesAuto - let the engine choose the ensemble size (stop once the result is stable).
    device - where the network runs.
    uncertaintyOpacity, showUncertainty - the uncertainty overlay in the slice views.
    datasetFolder - where Export adds retraining cases.
    segmentation, uncertainty - the last run's result nodes (reused on re-run).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelId: str = DEMO_MODEL_ID
    # float because Slicer's ctkSliderWidget binds to float; the Logic rounds it
    samples: Annotated[float, WithinRange(1.0, 32.0)] = float(model_choices.FALLBACK_SAMPLES)
    samplesAuto: bool = False  # the engine's --samples auto; the slider's number when off
    steps: Annotated[int, WithinRange(1, 1000)] = model_choices.FALLBACK_STEPS
    device: Annotated[str, Choice(list(DEVICE_NAMES))] = "auto"
    uncertaintyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    showUncertainty: bool = True
    datasetFolder: pathlib.Path = pathlib.Path.home() / "SpineSegDiff-dataset"
    segmentation: vtkMRMLSegmentationNode
    uncertainty: vtkMRMLScalarVolumeNode


# -- Widget ---------------------------------------------------------------------------


class SpineSegDiffWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to the parameter node; every action is one Logic call."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._rows = []
        self._overlayState = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSegDiff.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineSegDiffLogic()

        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.hide()
        self.ui.reviewTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.ResizeToContents)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChosen)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentOrCancel)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.reviewTable.connect("cellClicked(int,int)", self.onReviewRowClicked)

        self.initializeParameterNode()
        self.refreshModels()

    def onReload(self) -> None:
        # Slicer's Reload re-reads this file only: forget the sub-packages so their edits load too
        forget_modules()
        super().onReload()

    def cleanup(self) -> None:
        if self._process is not None:
            self._process.cancel()
        self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # the GUI is refreshed from the parameter node on enter()
        self._disconnectParameterNode()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._process is not None:
            self._process.cancel()  # its result would land in a scene that no longer exists
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            # SlicerParameterName properties in the .ui tie each widget to a field
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.modelId)
            self._showReviewRows(self.logic.reviewRows(self._parameterNode))
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        node = self._parameterNode
        running = self._process is not None
        ok, why = self.logic.canSegment(node) if node else (False, "no parameter node")
        self.ui.segmentButton.text = "Cancel" if running else "Segment"
        self.ui.segmentButton.enabled = running or ok
        self.ui.segmentButton.toolTip = ("Stop the running segmentation; nothing is kept" if running else
                                         "Segment the spinal canal, vertebrae and discs of the input volume"
                                         if ok else why)
        self.ui.exportButton.enabled = bool(node and node.segmentation and node.inputVolume and not running)
        # re-apply the overlay only when its own settings change, so other parameter edits
        # never undo what the user chose in the slice views
        overlay = (node.uncertainty.GetID() if node.uncertainty else None, node.uncertaintyOpacity,
                   node.showUncertainty) if node else None
        if node and not running and overlay != self._overlayState:
            self.logic.updateOverlay(node)
        self._overlayState = overlay

    # -- models -----------------------------------------------------------------------------
    def refreshModels(self) -> None:
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            for modelId, title in self.logic.availableModels():
                combo.addItem(title, modelId)
        except SpineSegDiffError as exc:  # a damaged registry must not break the panel
            logging.error(f"SpineSegDiff: cannot list models: {exc}")
            combo.addItem(DEMO_MODEL_ID, DEMO_MODEL_ID)
        combo.blockSignals(wasBlocked)
        if self._parameterNode:
            self._selectModelInCombo(self._parameterNode.modelId)

    def _selectModelInCombo(self, modelId: str) -> None:
        combo = self.ui.modelComboBox
        index = combo.findData(modelId)
        if index < 0:
            combo.addItem(modelId, modelId)  # e.g. a scene saved with a model added elsewhere
            index = combo.count - 1
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = index
        combo.blockSignals(wasBlocked)

    def onModelChosen(self, index: int) -> None:
        if not self._parameterNode or index < 0:
            return
        self.logic.selectModel(self._parameterNode, self.ui.modelComboBox.itemData(index))

    def onAddModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Add a SpineSegDiff model",
                                              "", "SpineSegDiff model (*.zip)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Could not add the model.", waitCursor=True):
            if not self.logic.setupDependencies():
                return
            modelId = self.logic.addModelFromFile(path)
            self.refreshModels()
            self.logic.selectModel(self._parameterNode, modelId)
            self._selectModelInCombo(modelId)

    # -- segmentation -----------------------------------------------------------------------
    def onSegmentOrCancel(self) -> None:
        if self._process is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self._process.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            if not self.logic.setupDependencies():
                return
            self.ui.logTextEdit.clear()
            self._process = self.logic.segment(self._parameterNode, onProgress=self.onProgress,
                                               onLog=self.ui.logTextEdit.appendPlainText,
                                               onFinished=self.onFinished)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Starting..."
            self._pollTimer.start()
        self.onParameterNodeModified()

    def onPollTimer(self) -> None:
        # callbacks (progress, import of the results) run here, on the GUI thread
        if self._process is None or not self._process.poll():
            self._pollTimer.stop()

    def onProgress(self, record: dict) -> None:
        self.ui.progressBar.value = int(round(1000 * float(record.get("fraction") or 0.0)))
        self.ui.statusLabel.text = describe_progress(record)

    def onFinished(self, outcome: "SegmentationOutcome") -> None:
        self._process = None
        self._pollTimer.stop()
        self.ui.progressBar.hide()
        if outcome.ok:
            self.ui.statusLabel.text = f"Done in {format_duration(outcome.seconds)}."
            self._showReviewRows(outcome.reviewRows)
        elif outcome.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        else:
            self.ui.statusLabel.text = "Failed: " + outcome.message
            slicer.util.errorDisplay(f"Segmentation failed: {outcome.message}",
                                     detailedText=outcome.log[-20000:] if outcome.log else None)
        self.onParameterNodeModified()

    # -- review and export ----------------------------------------------------------------------
    def _showReviewRows(self, rows) -> None:
        self._rows = list(rows)
        table = self.ui.reviewTable
        table.setRowCount(len(self._rows))
        for index, row in enumerate(self._rows):
            cells, tip = review_cells(row)
            for column, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(tip)
                table.setItem(index, column, item)

    def onReviewRowClicked(self, rowIndex: int, column: int) -> None:
        if 0 <= rowIndex < len(self._rows):
            self.logic.jumpTo(self._rows[rowIndex])

    def onExport(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not export the case.", waitCursor=True):
            labelPath = self.logic.exportForTraining(self._parameterNode)
            self.ui.statusLabel.text = f"Exported to {labelPath.parent.parent}"


# -- Logic ----------------------------------------------------------------------------


class SpineSegDiffLogic(ScriptedLoadableModuleLogic):
    """Runs the engine and brings its results into the scene; usable without the GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._modelDefaultsCache = {}
        self.lastOutcome = None

    def getParameterNode(self) -> SpineSegDiffParameterNode:
        return SpineSegDiffParameterNode(super().getParameterNode())

    # -- checks ------------------------------------------------------------------------------
    @staticmethod
    def canSegment(parameterNode) -> tuple:
        """(ok, why not) for the Segment button."""
        volume = parameterNode.inputVolume
        if volume is None:
            return False, "Select an input volume"
        if volume.GetImageData() is None:
            return False, f"Volume '{volume.GetName()}' has no image data"
        if not parameterNode.modelId:
            return False, "Select a model"
        return True, ""

    # -- dependencies ------------------------------------------------------------------------
    @staticmethod
    def setupDependencies(askConfirmation: bool = True) -> bool:
        """Make sure the engine's packages exist in Slicer's Python (asks first); True when ready."""
        return dependencies.setup_dependencies(RESOURCES_DIR / "requirements.txt", askConfirmation)

    # -- models --------------------------------------------------------------------------------
    @staticmethod
    def availableModels() -> list:
        """(model id, title) of every registered model: bundled first, then the user's."""
        return model_choices.available_models()

    @staticmethod
    def addModelFromFile(path: str) -> str:
        """Check and copy a model .zip into the user's model cache; returns its id."""
        return model_choices.add_model_from_file(path)

    def modelDefaults(self, modelId: str) -> tuple:
        """(samples, steps) from the model's model.json (read without torch), cached per model."""
        if modelId not in self._modelDefaultsCache:
            self._modelDefaultsCache[modelId] = model_choices.model_defaults(modelId)
        return self._modelDefaultsCache[modelId]

    def selectModel(self, parameterNode, modelId: str) -> None:
        """Choose a model and reset samples/steps to its defaults."""
        samples, steps = self.modelDefaults(modelId)
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.modelId = modelId
            parameterNode.samples = float(min(max(samples, 1), 32))
            parameterNode.steps = int(max(steps, 1))

    # -- running -------------------------------------------------------------------------------
    def segment(self, parameterNode, onProgress: Optional[Callable] = None, onLog: Optional[Callable] = None,
                onFinished: Optional[Callable] = None, waitForCompletion: bool = False,
                timeout: Optional[float] = None):
        """Start the engine on the parameter node's volume; returns the EngineProcess.

        The results are imported when the process ends, inside ``process.poll()`` (the
        Widget's timer) or, with ``waitForCompletion``, before this returns; then a failure
        raises RuntimeError with the engine's one-line message.
        """
        ok, why = self.canSegment(parameterNode)
        if not ok:
            raise ValueError(why)
        workDir = pathlib.Path(slicer.util.tempDirectory("SpineSegDiff"))
        write_input_volume(parameterNode.inputVolume, workDir / INPUT_NAME)

        def imported(results) -> None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.segmentation = results.segmentation_node
                parameterNode.uncertainty = results.uncertainty_node
            results.segmentation_node.CreateClosedSurfaceRepresentation()
            self.updateOverlay(parameterNode)

        def finished(outcome: SegmentationOutcome) -> None:
            self.lastOutcome = outcome
            if onFinished is not None:
                onFinished(outcome)

        process = start_segmentation(
            slicer.mrmlScene, slicer.modules.segmentations.logic(), parameterNode.inputVolume, workDir,
            model=parameterNode.modelId,
            samples="auto" if parameterNode.samplesAuto else int(round(parameterNode.samples)), steps=parameterNode.steps,
            device=parameterNode.device, python_executable=python_executable(), engine_dir=ENGINE_DIR,
            on_finished=finished, on_imported=imported, segmentation_node=parameterNode.segmentation,
            on_progress=onProgress, on_log=onLog)
        if waitForCompletion:
            wait_for(process, timeout)
            if not self.lastOutcome.ok:
                raise RuntimeError(self.lastOutcome.message)
        return process

    def updateOverlay(self, parameterNode) -> None:
        """Show or hide the uncertainty over the input in the slice views."""
        if parameterNode.uncertainty is None or parameterNode.inputVolume is None:
            return
        show_overlay(slicer.mrmlScene, parameterNode.inputVolume, parameterNode.uncertainty,
                     parameterNode.uncertaintyOpacity, parameterNode.showUncertainty)

    @staticmethod
    def reviewRows(parameterNode) -> list:
        """Review rows of the current segmentation (its summary is kept on the node)."""
        return node_review_rows(parameterNode.segmentation)

    @staticmethod
    def jumpTo(row) -> None:
        if row.peak_ras is None:
            return
        jump_to(slicer.mrmlScene, row.peak_ras)

    def exportForTraining(self, parameterNode) -> pathlib.Path:
        """Add the input and its (reviewed) segmentation as one case to the data set folder."""
        volume = parameterNode.inputVolume
        provenance = slicer_provenance(volume, parameterNode.steps)
        return export_for_training(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                   parameterNode.segmentation, volume, parameterNode.datasetFolder, provenance)


# -- Test (the cases are in SpineSegDiffSlicerLib/self_test.py) --------------------------------


class SpineSegDiffTest(SpineSegDiffSelfTest):
    """Slicer runs this on Reload and Test and in ctest (slicer_add_python_unittest)."""
