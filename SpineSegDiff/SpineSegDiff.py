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
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

try:  # Slicer >= 5.3: strings marked for translation, as Slicer's own modules do
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # older Slicer: shown untranslated
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text

from SpineSegDiffSlicerLib.engine_path import ensure_engine_importable, forget_modules

MODULE_DIR = pathlib.Path(__file__).resolve().parent
# Once, at import: the SpineSegDiffSlicerLib modules that use the engine can then import it.
ENGINE_DIR = ensure_engine_importable(MODULE_DIR)

from SpineSegDiffLib.core.device_names import DEVICE_NAMES  # noqa: E402  (needs the engine path)
from SpineSegDiffLib.core.errors import SpineSegDiffError  # noqa: E402
from SpineSegDiffSlicerLib import dependencies, dicom_export, engine_info, model_choices, terminology  # noqa: E402
from SpineSegDiffSlicerLib.export import export_for_training, slicer_provenance  # noqa: E402
from SpineSegDiffSlicerLib.formatting import describe_progress, format_duration, review_cells  # noqa: E402
from SpineSegDiffSlicerLib.cached_step import start_cached_step  # noqa: E402
from SpineSegDiffSlicerLib.engine_run import INPUT_NAME, start_segmentation, wait_for  # noqa: E402
from SpineSegDiffSlicerLib.engine_run import python_executable, write_input_volume  # noqa: E402
from SpineSegDiffSlicerLib.measurements_table import level_point_ras  # noqa: E402
from SpineSegDiffSlicerLib.outcome import SegmentationOutcome  # noqa: E402
from SpineSegDiffSlicerLib.review import jump_to, node_review_rows  # noqa: E402
from SpineSegDiffSlicerLib.sample_data import register_sample_data  # noqa: E402
from SpineSegDiffSlicerLib.segment_editor import setup_editor_node  # noqa: E402
from SpineSegDiffSlicerLib.self_test import SpineSegDiffSelfTest  # noqa: E402
from SpineSegDiffSlicerLib.uncertainty_display import show_overlay  # noqa: E402

RESOURCES_DIR = MODULE_DIR / "Resources"
SAMPLE_FILE = RESOURCES_DIR / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
SAMPLE_NAME = "SpineSegDiffPhantomT2"
DEMO_MODEL_ID = "spinesegdiff-demo"
POLL_INTERVAL_MS = 100
DOCS_URL = "https://github.com/SpineSegDiff/SlicerSpineSegDiff/blob/main/docs/slicer.md"


# -- Module ---------------------------------------------------------------------------


class SpineSegDiff(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SpineSegDiff")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSegDiff project (SpineSegDiff contributors)"]
        self.parent.helpText = _("""
Segments lumbar spine MRI into spinal canal, vertebrae and intervertebral discs with a
conditional diffusion model (Diff-UNet style, 2D sagittal slices) and shows a voxel-wise
uncertainty map. Pick a volume and a model, press <b>Segment</b>: the model runs in a
background process (Cancel stops it). The <b>Review</b> table lists each structure's volume
and mean uncertainty, most uncertain first; click a row to jump to where the model is least
sure. <b>Edit in Segment Editor</b> opens the result for correction; <b>Export</b> adds the
case to a retraining data set, or writes a DICOM SEG when the input came from DICOM.
Research software, not for clinical use.
""") + f'<p><a href="{DOCS_URL}">' + _("Documentation") + "</a></p>"
        self.parent.acknowledgementText = _("""
Method after SpineSegDiff (MIDL 2025, "Enhancing Low Back Pain Assessment with Diffusion
Models for Lumbar Spine MRI Segmentation") and Diff-UNet. Panel structure learned from the
Slicer scripted module template, SlicerNNUnet and SlicerMONAIAuto3DSeg.
""")
        slicer.app.connect("startupCompleted()", onStartupCompleted)


def onStartupCompleted() -> None:
    registerSampleData()
    loadTerminology()


def loadTerminology() -> None:
    """Load the segments' coded anatomy (SpineSegDiff.term.json) into Slicer's terminologies,
    at startup as TotalSegmentator and MONAIAuto3DSeg do, so the Segment Editor shows it."""
    try:
        terminology.load_terminology(slicer.modules.terminologies.logic(), MODULE_DIR)
    except Exception as exc:  # a missing terminology must not stop Slicer from starting
        logging.error(f"SpineSegDiff: could not load the terminology: {exc}")


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
    useSampleCache - off: runs use --no-cache (nothing derived from the images kept on disk).
    measurements - levels and per-level measurements (--output-measurements) with the run.
    measurementsTable - the last run's measurements, when it measured.
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
    useSampleCache: bool = True
    measurements: bool = False
    measurementsTable: vtkMRMLTableNode


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
        self._engineInfo = None  # the last `spinesegdiff info --json` report
        self._infoProcess = None
        self._pendingClear = ()  # caches to clear once the running info process ends
        self._infoTimer = qt.QTimer()
        self._infoTimer.setInterval(POLL_INTERVAL_MS)
        self._infoTimer.connect("timeout()", self.onInfoTimer)

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
        self.ui.editButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)
        self.ui.measurementsTableView.connect("clicked(QModelIndex)", self.onMeasurementClicked)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChosen)
        self.ui.clearModelCacheButton.connect("clicked(bool)", lambda: self.onClearCache("models"))
        self.ui.clearSampleCacheButton.connect("clicked(bool)", lambda: self.onClearCache("ensembles"))

        self.initializeParameterNode()
        self.refreshModels()
        self.refreshEngineInfo()

    def onReload(self) -> None:
        # Slicer's Reload re-reads this file only: forget the sub-packages so their edits load too
        forget_modules()
        super().onReload()

    def cleanup(self) -> None:
        for process in (self._process, self._infoProcess):
            if process is not None:
                process.cancel()
        self._pollTimer.stop()
        self._infoTimer.stop()
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
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment")
        self.ui.segmentButton.enabled = running or ok
        self.ui.segmentButton.toolTip = (_("Stop the running segmentation; nothing is kept") if running else
                                         _("Segment the spinal canal, vertebrae and discs of the input volume")
                                         if ok else why)
        hasResult = bool(node and node.segmentation and node.inputVolume and not running)
        self.ui.exportButton.enabled = hasResult
        self.ui.editButton.enabled = hasResult
        self.ui.exportDicomSegButton.enabled = hasResult and dicom_export.is_from_dicom(node.inputVolume)
        table = node.measurementsTable if node else None
        if self.ui.measurementsTableView.mrmlTableNode() is not table:  # re-setting would reset the view
            self.ui.measurementsTableView.setMRMLTableNode(table)
        self.ui.measurementsTableView.visible = table is not None
        self.ui.measurementsLabel.visible = table is not None
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
            logging.error(_("SpineSegDiff: cannot list models: {error}").format(error=exc))
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
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Add a SpineSegDiff model"),
                                              "", _("SpineSegDiff model") + " (*.zip)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not add the model."), waitCursor=True):
            if not self.logic.setupDependencies():
                return
            modelId = self.logic.addModelFromFile(path)
            self.refreshModels()
            self.logic.selectModel(self._parameterNode, modelId)
            self._selectModelInCombo(modelId)

    # -- segmentation -----------------------------------------------------------------------
    def onSegmentOrCancel(self) -> None:
        if self._process is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            self._process.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            if not self.logic.setupDependencies():
                return
            self.ui.logTextEdit.clear()
            self._process = self.logic.segment(self._parameterNode, onProgress=self.onProgress,
                                               onLog=self.ui.logTextEdit.appendPlainText,
                                               onFinished=self.onFinished)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = _("Starting...")
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
            self.ui.statusLabel.text = _("Done in {duration}.").format(duration=format_duration(outcome.seconds))
            self._showReviewRows(outcome.reviewRows)
        elif outcome.cancelled:
            self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
        else:
            self.ui.statusLabel.text = _("Failed: {message}").format(message=outcome.message)
            slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=outcome.message),
                                     detailedText=outcome.log[-20000:] if outcome.log else None)
        self.onParameterNodeModified()
        self.refreshEngineInfo()  # the run may have filled the sample cache

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
        with slicer.util.tryWithErrorDisplay(_("Could not export the case."), waitCursor=True):
            labelPath = self.logic.exportForTraining(self._parameterNode)
            self.ui.statusLabel.text = _("Exported to {folder}").format(folder=labelPath.parent.parent)

    def onExportDicomSeg(self) -> None:
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export DICOM SEG"),
                                              "segmentation.dcm", _("DICOM file") + " (*.dcm)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not write the DICOM SEG."), waitCursor=True):
            written = self.logic.exportDicomSeg(self._parameterNode, path)
            self.ui.statusLabel.text = _("DICOM SEG written to {path}").format(path=written)

    def onEditInSegmentEditor(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not open the Segment Editor."), waitCursor=True):
            self.logic.editInSegmentEditor(self._parameterNode, self._rows[0].key if self._rows else None)

    def onMeasurementClicked(self, index) -> None:
        table = self._parameterNode.measurementsTable if self._parameterNode else None
        if table is not None:
            self.logic.jumpToLevel(table, index.row())

    # -- device and caches (from `spinesegdiff info --json`, run in the engine's process) -----------
    def refreshEngineInfo(self, clear=()) -> None:
        if self._infoProcess is not None:  # one at a time; a Clear pressed meanwhile runs next
            self._pendingClear = tuple(dict.fromkeys(self._pendingClear + tuple(clear)))
            return
        try:
            self._infoProcess = self.logic.startEngineInfo(self.onEngineInfo, self.onEngineInfoFailed, clear)
        except OSError as exc:
            self.onEngineInfoFailed(str(exc))
            return
        self._infoTimer.start()

    def onInfoTimer(self) -> None:
        if self._infoProcess is None or not self._infoProcess.poll():
            self._infoTimer.stop()
            if self._infoProcess is None and self._pendingClear:
                clear, self._pendingClear = self._pendingClear, ()
                self.refreshEngineInfo(clear)

    def onEngineInfo(self, report: dict) -> None:
        self._infoProcess = None
        self._engineInfo = report
        labels = {"models": self.ui.modelCacheLabel, "ensembles": self.ui.sampleCacheLabel}
        for row in engine_info.cache_rows(report):
            labels[row["kind"]].text = _("{title}: {size} in {folder}").format(
                title=row["title"], size=row["size"], folder=row["folder"])
            labels[row["kind"]].toolTip = row["note"]
        # devices this computer lacks stay in the list (saved scenes may name them) but greyed out
        available = engine_info.available_devices(report)
        model = self.ui.deviceComboBox.model()
        for index in range(self.ui.deviceComboBox.count):
            model.item(index).setEnabled(self.ui.deviceComboBox.itemText(index) in available)
        self.onDeviceChosen()

    def onEngineInfoFailed(self, message: str) -> None:
        self._infoProcess = None
        text = _("Device and caches unknown: {message} (the engine's packages may not be installed yet; "
                 "press Segment to install them)").format(message=message)
        self.ui.deviceInfoLabel.text = text
        self.ui.modelCacheLabel.text = self.ui.sampleCacheLabel.text = _("unknown")

    def onDeviceChosen(self, index=None) -> None:
        if self._engineInfo is not None:
            device = self.ui.deviceComboBox.currentText or "auto"
            self.ui.deviceInfoLabel.text = _("A run will use: {device}").format(
                device=engine_info.device_text(self._engineInfo, device))

    def onClearCache(self, kind: str) -> None:
        what = _("model cache") if kind == "models" else _("sample cache")
        if slicer.util.confirmOkCancelDisplay(_("Clear the {what}?").format(what=what),
                                              windowTitle=_("SpineSegDiff: caches")):
            self.refreshEngineInfo(clear=(kind,))


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
            return False, _("Select an input volume")
        if volume.GetImageData() is None:
            return False, _("Volume '{name}' has no image data").format(name=volume.GetName())
        if not parameterNode.modelId:
            return False, _("Select a model")
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
        """Start the engine on the parameter node's volume; returns the EngineProcess (or, when
        every sample asked for is cached, a finished ``CachedStep`` computed in this process).

        The results are imported when the process ends, inside ``process.poll()`` (the
        Widget's timer) or, with ``waitForCompletion``, before this returns; then a failure
        raises RuntimeError with the engine's one-line message.
        """
        ok, why = self.canSegment(parameterNode)
        if not ok:
            raise ValueError(why)

        def imported(results) -> None:
            with slicer.util.NodeModify(parameterNode.parameterNode):
                parameterNode.segmentation = results.segmentation_node
                parameterNode.uncertainty = results.uncertainty_node
                parameterNode.measurementsTable = results.measurements_table
            results.segmentation_node.CreateClosedSurfaceRepresentation()
            self.updateOverlay(parameterNode)

        def finished(outcome: SegmentationOutcome) -> None:
            self.lastOutcome = outcome
            if onFinished is not None:
                onFinished(outcome)

        run = dict(model=parameterNode.modelId,
                   samples="auto" if parameterNode.samplesAuto else int(round(parameterNode.samples)),
                   steps=parameterNode.steps, device=parameterNode.device, on_finished=finished,
                   on_imported=imported, segmentation_node=parameterNode.segmentation)
        process = None
        if parameterNode.useSampleCache and not parameterNode.measurements:
            # every sample on disk (the slider's step): fused here, no engine process (cached_step.py)
            process = start_cached_step(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                        parameterNode.inputVolume, **run)
        if process is None:
            workDir = pathlib.Path(slicer.util.tempDirectory("SpineSegDiff"))
            write_input_volume(parameterNode.inputVolume, workDir / INPUT_NAME)
            process = start_segmentation(
                slicer.mrmlScene, slicer.modules.segmentations.logic(), parameterNode.inputVolume, workDir,
                python_executable=python_executable(), engine_dir=ENGINE_DIR, on_progress=onProgress,
                on_log=onLog, no_cache=not parameterNode.useSampleCache, measurements=parameterNode.measurements,
                **run)
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

    @staticmethod
    def jumpToLevel(table, row: int) -> None:
        """Centre the slice views on the level of a measurements-table row (none for case-wide rows)."""
        ras = level_point_ras(table, row)
        if ras is not None:
            jump_to(slicer.mrmlScene, ras)

    @staticmethod
    def startEngineInfo(onReport: Callable, onFailed: Callable, clear=()):
        """`spinesegdiff info --json` (clearing ``clear`` caches first) in an engine process."""
        return engine_info.start_info(python_executable(), ENGINE_DIR, onReport, onFailed, clear)

    def editInSegmentEditor(self, parameterNode, segmentId: Optional[str] = None) -> None:
        """Open the Segment Editor on the result and its source volume, the uncertainty still shown."""
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        setup_editor_node(editor.mrmlSegmentEditorNode(), parameterNode.segmentation, parameterNode.inputVolume,
                          segmentId)
        # the editor shows its source volume in the background; put the uncertainty back on top
        self.updateOverlay(parameterNode)

    @staticmethod
    def exportDicomSeg(parameterNode, path: str) -> pathlib.Path:
        """Write the (edited) segmentation as DICOM SEG with the engine's writer (input from DICOM only)."""
        return dicom_export.export_dicom_seg(
            slicer.modules.segmentations.logic(), parameterNode.segmentation, parameterNode.inputVolume, path,
            slicer.dicomDatabase.fileForInstance, python_executable(), ENGINE_DIR)

    def exportForTraining(self, parameterNode) -> pathlib.Path:
        """Add the input and its (reviewed) segmentation as one case to the data set folder."""
        volume = parameterNode.inputVolume
        provenance = slicer_provenance(volume, parameterNode.steps)
        return export_for_training(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                   parameterNode.segmentation, volume, parameterNode.datasetFolder, provenance)


# -- Test (the cases are in SpineSegDiffSlicerLib/self_test.py) --------------------------------


class SpineSegDiffTest(SpineSegDiffSelfTest):
    """Slicer runs this on Reload and Test and in ctest (slicer_add_python_unittest)."""
