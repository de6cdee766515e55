"""SpineSegDiff: lumbar spine MRI segmentation with a diffusion model, inside 3D Slicer.

The module stays thin: the Widget binds the panel to a parameter node, the Logic builds
the engine's command line and runs it as a separate process (Slicer's own Python running
``python -m SpineSegDiffLib segment``), then hands the outputs to ``SpineSegDiffSlicerLib``
(MRML in/out, tested with pytest + slicer-core). A crash or a GPU out-of-memory in the
engine therefore never takes Slicer down, and Cancel kills the whole process tree.
"""

import datetime
import importlib.metadata
import importlib.util
import json
import logging
import pathlib
import shutil
import sys
import zipfile
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_DIR = pathlib.Path(__file__).resolve().parent
RESOURCES_DIR = MODULE_DIR / "Resources"
SAMPLE_FILE = RESOURCES_DIR / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
SAMPLE_NAME = "SpineSegDiffPhantomT2"
DEMO_MODEL_ID = "spinesegdiff-demo"
DEVICES = ["auto", "cuda", "cpu"]
# Used until a model's own defaults (model.json inference_defaults) are known.
FALLBACK_SAMPLES = 10
FALLBACK_STEPS = 10
POLL_INTERVAL_MS = 100
# Import name -> distribution name; what the engine process needs in Slicer's Python.
ENGINE_IMPORTS = {"torch": "torch", "monai": "monai", "SimpleITK": "SimpleITK",
                  "safetensors": "safetensors", "scipy": "scipy", "slicerio": "slicerio",
                  "tqdm": "tqdm", "PIL": "pillow"}
# Slicer ships its own SimpleITK build (with Slicer's IO); never replace it with the wheel.
KEEP_SLICER_OWN = {"SimpleITK"}
STAGE_NAMES = {"load": "Loading", "grid": "Preparing slices", "encode": "Encoding the image",
               "sample": "Sampling", "fuse": "Fusing samples", "write": "Writing results",
               "done": "Importing results"}


def engineDirectory() -> pathlib.Path:
    """The folder that holds the ``SpineSegDiffLib`` package.

    Installed extension: beside this file (CMake installs the engine there). Source tree
    (module folder added to Slicer's module paths): the repository root, one level up.
    """
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "SpineSegDiffLib" / "__init__.py").is_file():
            return candidate
    raise RuntimeError(f"the SpineSegDiff engine (SpineSegDiffLib) was not found beside {MODULE_DIR}; "
                       "reinstall the SpineSegDiff extension")


def _ensureEngineImportable() -> None:
    # SpineSegDiffSlicerLib imports SpineSegDiffLib; in the source-tree layout that folder is
    # not on Slicer's module paths, so add it once.
    engine = str(engineDirectory())
    if engine not in sys.path:
        sys.path.insert(0, engine)


#
# Module
#


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


def sampleChecksum(sampleFile: pathlib.Path = SAMPLE_FILE) -> Optional[str]:
    """The SHA-256 that scripts/make_sample_data.py wrote beside the sample, if any."""
    sidecar = sampleFile.with_name(sampleFile.name + ".sha256")
    if not sidecar.is_file():
        return None
    text = sidecar.read_text(encoding="utf-8").split()
    return text[0].lower() if text else None


def registerSampleData() -> None:
    """Offer the bundled lumbar phantom in the Sample Data module."""
    if not SAMPLE_FILE.is_file():
        logging.info(f"SpineSegDiff: no sample volume at {SAMPLE_FILE}; run scripts/make_sample_data.py")
        return
    import SampleData

    checksum = sampleChecksum()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SpineSegDiff",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(RESOURCES_DIR / "Icons" / "SpineSegDiff.png"),
        # a local file URI: the phantom ships with the extension, nothing is downloaded
        uris=SAMPLE_FILE.as_uri(),
        fileNames=SAMPLE_FILE.name,
        checksums=f"SHA256:{checksum}" if checksum else None,
        nodeNames=SAMPLE_NAME,
    )


#
# Parameter node
#


@parameterNodeWrapper
class SpineSegDiffParameterNode:
    """Everything the panel shows, saved with the scene.

    inputVolume - the MRI to segment.
    modelId - a registry model id (or a .zip path) passed to ``--model``.
    samples, steps - ensemble size and DDIM steps (defaults come from the chosen model).
    device - where the network runs.
    uncertaintyOpacity, showUncertainty - the uncertainty overlay in the slice views.
    datasetFolder - where Export adds retraining cases.
    segmentation, uncertainty - the last run's result nodes (reused on re-run).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelId: str = DEMO_MODEL_ID
    # float because Slicer's ctkSliderWidget binds to float; the Logic rounds it
    samples: Annotated[float, WithinRange(1.0, 32.0)] = float(FALLBACK_SAMPLES)
    steps: Annotated[int, WithinRange(1, 1000)] = FALLBACK_STEPS
    device: Annotated[str, Choice(DEVICES)] = "auto"
    uncertaintyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    showUncertainty: bool = True
    datasetFolder: pathlib.Path = pathlib.Path.home() / "SpineSegDiff-dataset"
    segmentation: vtkMRMLSegmentationNode
    uncertainty: vtkMRMLScalarVolumeNode


#
# Widget
#


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
        except Exception as exc:  # a damaged registry must not break the panel
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
        self.ui.statusLabel.text = describeProgress(record)

    def onFinished(self, outcome: "SegmentationOutcome") -> None:
        self._process = None
        self._pollTimer.stop()
        self.ui.progressBar.hide()
        if outcome.ok:
            self.ui.statusLabel.text = f"Done in {formatDuration(outcome.seconds)}."
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
            cells = (row.name, f"{row.volume_ml:.1f}", f"{row.mean_uncertainty:.3f}")
            for column, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                item.setToolTip("Click to jump to where this structure is most uncertain"
                                if row.peak_ras else "Not found in this volume")
                table.setItem(index, column, item)

    def onReviewRowClicked(self, rowIndex: int, column: int) -> None:
        if 0 <= rowIndex < len(self._rows):
            self.logic.jumpTo(self._rows[rowIndex])

    def onExport(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not export the case.", waitCursor=True):
            labelPath = self.logic.exportForTraining(self._parameterNode)
            self.ui.statusLabel.text = f"Exported to {labelPath.parent.parent}"


def formatDuration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown time"
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def describeProgress(record: dict) -> str:
    """'Sampling (sample 2, step 7) - about 1 min 5 s left' from one progress line."""
    text = STAGE_NAMES.get(record.get("stage"), str(record.get("stage", "Working")))
    detail = [f"{key} {record[key]}" for key in ("sample", "step") if record.get(key) is not None]
    if detail:
        text += f" ({', '.join(detail)})"
    if record.get("seconds_left") is not None:
        text += f" - about {formatDuration(record['seconds_left'])} left"
    return text


#
# Logic
#


class SegmentationOutcome:
    """What one run ended with, as the Widget and scripts need it."""

    def __init__(self, result, reviewRows=None, message: str = "", seconds: Optional[float] = None) -> None:
        self.result = result
        self.reviewRows = list(reviewRows or [])
        self.message = message or (result.message if result else "")
        self.seconds = seconds

    @property
    def ok(self) -> bool:
        return bool(self.result and self.result.ok and not self.message)

    @property
    def cancelled(self) -> bool:
        return bool(self.result and self.result.cancelled)

    @property
    def log(self) -> str:
        if not self.result:
            return ""
        return "\n".join(list(self.result.stdout_log) + [self.result.stderr])


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
    def requirementsFile() -> pathlib.Path:
        return RESOURCES_DIR / "requirements.txt"

    @classmethod
    def pinnedRequirements(cls) -> dict:
        """Distribution name (lower case) -> pinned line, from Resources/requirements.txt."""
        pins = {}
        for line in cls.requirementsFile().read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                pins[line.split("==", 1)[0].strip().lower()] = line
        return pins

    @classmethod
    def missingRequirements(cls) -> list:
        """Pinned lines that are not installed at their version (torch comes separately)."""
        missing = []
        for distribution, line in cls.pinnedRequirements().items():
            wanted = line.split("==", 1)[1].strip()
            importName = next((name for name, dist in ENGINE_IMPORTS.items() if dist.lower() == distribution),
                              distribution)
            if importName in KEEP_SLICER_OWN and importlib.util.find_spec(importName) is not None:
                continue
            try:
                installed = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                installed = None
            if installed != wanted:
                missing.append(line)
        return missing

    @classmethod
    def setupDependencies(cls, askConfirmation: bool = True) -> bool:
        """Make sure the engine's packages exist in Slicer's Python; True when ready to run.

        Asks before installing. torch comes from the PyTorch extension's helper (it picks
        the CUDA build that fits this computer); the rest are pinned in requirements.txt.
        The engine runs in a new process, so fresh packages are used at once; a restart is
        needed only when a package already loaded into Slicer itself was replaced.
        """
        torchMissing = importlib.util.find_spec("torch") is None
        missing = cls.missingRequirements()
        if not torchMissing and not missing:
            return True
        names = (["torch (PyTorch)"] if torchMissing else []) + missing
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "SpineSegDiff needs these Python packages in Slicer:\n  " + "\n  ".join(names) +
                "\n\nInstall them now? This downloads several hundred MB and can take minutes.",
                windowTitle="SpineSegDiff: install dependencies"):
            return False
        if torchMissing:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("SpineSegDiff needs the PyTorch extension: install 'PyTorch' "
                                         "in the Extensions Manager, restart Slicer, then try again.")
                return False
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=">=2.4") is None:
                slicer.util.errorDisplay("PyTorch could not be installed; see the Python console "
                                         "(View > Python Console) for pip's message.")
                return False
        if missing:
            alreadyLoaded = [line for line in missing if _importNameOf(line) in sys.modules]
            slicer.util.pip_install(" ".join(missing))
            if alreadyLoaded:
                if askConfirmation and slicer.util.confirmYesNoDisplay(
                        "Updated packages that Slicer had already loaded (" + ", ".join(alreadyLoaded) +
                        "). Restart Slicer now to use them?", windowTitle="SpineSegDiff: restart needed"):
                    slicer.util.restart()
                logging.warning("SpineSegDiff: restart Slicer to use the updated " + ", ".join(alreadyLoaded))
        return True

    # -- models --------------------------------------------------------------------------------
    @staticmethod
    def availableModels() -> list:
        """(model id, title) of every registered model: bundled first, then the user's."""
        _ensureEngineImportable()
        from SpineSegDiffLib.model import registry

        seen, models = set(), []
        for entry in reversed(registry.all_models()):  # a later (user) entry wins for its id
            if entry.id not in seen:
                seen.add(entry.id)
                models.append((entry.id, f"{entry.title} ({entry.version})"))
        return list(reversed(models))

    @staticmethod
    def addModelFromFile(path: str) -> str:
        """Check and copy a model .zip into the user's model cache; returns its id."""
        _ensureEngineImportable()
        from SpineSegDiffLib.model import registry

        return registry.add_user_model(path).id

    def modelDefaults(self, modelId: str) -> tuple:
        """(samples, steps) from the model's model.json, when the model file is local."""
        if modelId in self._modelDefaultsCache:
            return self._modelDefaultsCache[modelId]
        defaults = (FALLBACK_SAMPLES, FALLBACK_STEPS)
        try:
            _ensureEngineImportable()
            from SpineSegDiffLib.model import registry

            path = pathlib.Path(modelId)
            if not path.is_file():
                entry = next((e for e in reversed(registry.all_models()) if e.id == modelId), None)
                # a remote model is downloaded by the engine on first use, not on the GUI thread
                path = registry.resolve_model(entry) if entry is not None and not entry.is_remote else None
            if path is not None:
                # read model.json directly: loading the engine's modelfile would import torch here
                with zipfile.ZipFile(path) as archive:
                    metadata = json.loads(archive.read("model.json").decode("utf-8"))
                found = metadata.get("inference_defaults", {})
                defaults = (int(found.get("samples", FALLBACK_SAMPLES)), int(found.get("steps", FALLBACK_STEPS)))
        except Exception as exc:  # defaults are a convenience; the engine checks the model for real
            logging.warning(f"SpineSegDiff: could not read the defaults of model '{modelId}': {exc}")
        self._modelDefaultsCache[modelId] = defaults
        return defaults

    def selectModel(self, parameterNode, modelId: str) -> None:
        """Choose a model and reset samples/steps to its defaults."""
        samples, steps = self.modelDefaults(modelId)
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.modelId = modelId
            parameterNode.samples = float(min(max(samples, 1), 32))
            parameterNode.steps = int(max(steps, 1))

    # -- running -------------------------------------------------------------------------------
    @staticmethod
    def pythonExecutable() -> str:
        # PythonSlicer is Slicer's Python with Slicer's environment; sys.executable may be
        # the Slicer application itself.
        return shutil.which("PythonSlicer") or sys.executable

    @staticmethod
    def writeInputVolume(volumeNode, path: pathlib.Path) -> None:
        # exportNode writes a copy without re-pointing the node's storage at a temporary
        # file (saveNode would, and "Save" would then offer the temp path); older Slicer: saveNode.
        if hasattr(slicer.util, "exportNode"):
            slicer.util.exportNode(volumeNode, str(path))
        elif not slicer.util.saveNode(volumeNode, str(path)):
            raise RuntimeError(f"could not write the input volume to {path}")
        if not path.is_file():
            raise RuntimeError(f"could not write the input volume to {path}")

    def segment(self, parameterNode, onProgress: Optional[Callable] = None, onLog: Optional[Callable] = None,
                onFinished: Optional[Callable] = None, waitForCompletion: bool = False,
                timeout: Optional[float] = None):
        """Start the engine on the parameter node's volume; returns the EngineProcess.

        The results are imported when the process ends, inside ``process.poll()`` (the
        Widget's timer) or, with ``waitForCompletion``, before this returns; then a failure
        raises RuntimeError with the engine's one-line message.
        """
        from SpineSegDiffSlicerLib.process_runner import EngineProcess, python_environment, segment_command

        ok, why = self.canSegment(parameterNode)
        if not ok:
            raise ValueError(why)
        volume = parameterNode.inputVolume
        workDir = pathlib.Path(slicer.util.tempDirectory("SpineSegDiff"))
        inputPath = workDir / "input.nrrd"
        self.writeInputVolume(volume, inputPath)
        command, outputs = segment_command(self.pythonExecutable(), inputPath, parameterNode.modelId,
                                           int(round(parameterNode.samples)), parameterNode.steps,
                                           parameterNode.device, workDir)
        started = datetime.datetime.now()
        logging.info("SpineSegDiff: running " + " ".join(command))

        def finished(result) -> None:
            outcome = self._finishRun(parameterNode, volume, outputs, result, workDir,
                                      (datetime.datetime.now() - started).total_seconds())
            if onFinished is not None:
                onFinished(outcome)

        process = EngineProcess(command, on_progress=onProgress or (lambda record: None), on_finished=finished,
                                on_log=onLog, env=python_environment(engineDirectory()), cwd=str(workDir))
        try:
            process.start()
        except OSError as exc:
            shutil.rmtree(workDir, ignore_errors=True)
            raise RuntimeError(f"could not start {command[0]} ({exc}); reinstall Slicer's Python "
                               "or the SpineSegDiff extension") from None
        if waitForCompletion:
            try:
                process.wait(timeout)
            except TimeoutError:
                process.cancel()
                process.wait(60)
                raise RuntimeError(f"the segmentation took longer than {timeout} s and was cancelled")
            if not self.lastOutcome.ok:
                raise RuntimeError(self.lastOutcome.message)
        return process

    def _finishRun(self, parameterNode, volume, outputs: dict, result, workDir: pathlib.Path,
                   seconds: float) -> SegmentationOutcome:
        try:
            if not result.ok:
                outcome = SegmentationOutcome(result, seconds=seconds)
            else:
                rows = self.importResults(parameterNode, volume, outputs, result.summary_path or outputs["summary"])
                outcome = SegmentationOutcome(result, rows, seconds=seconds)
        except Exception as exc:
            logging.exception("SpineSegDiff: importing the results failed")
            outcome = SegmentationOutcome(result, message=str(exc), seconds=seconds)
        finally:
            shutil.rmtree(workDir, ignore_errors=True)
        self.lastOutcome = outcome
        return outcome

    def importResults(self, parameterNode, volume, outputs: dict, summaryPath) -> list:
        """Bring one run's files into the scene (reusing the previous result nodes)."""
        _ensureEngineImportable()
        from SpineSegDiffSlicerLib.results import import_results

        imported = import_results(slicer.mrmlScene, slicer.modules.segmentations.logic(), volume,
                                  outputs["segmentation"], outputs["uncertainty"], summaryPath,
                                  segmentation_node=parameterNode.segmentation)
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.segmentation = imported.segmentation_node
            parameterNode.uncertainty = imported.uncertainty_node
        imported.segmentation_node.CreateClosedSurfaceRepresentation()
        self.updateOverlay(parameterNode)
        return imported.review_rows

    def updateOverlay(self, parameterNode) -> None:
        """Show or hide the uncertainty over the input in the slice views."""
        if parameterNode.uncertainty is None or parameterNode.inputVolume is None:
            return
        _ensureEngineImportable()
        from SpineSegDiffSlicerLib.uncertainty_display import show_overlay

        show_overlay(slicer.mrmlScene, parameterNode.inputVolume, parameterNode.uncertainty,
                     parameterNode.uncertaintyOpacity, parameterNode.showUncertainty)

    @staticmethod
    def reviewRows(parameterNode) -> list:
        """Review rows of the current segmentation (its summary is kept on the node)."""
        segmentation = parameterNode.segmentation
        if segmentation is None:
            return []
        _ensureEngineImportable()
        from SpineSegDiffSlicerLib import node_tags
        from SpineSegDiffSlicerLib.review import review_rows

        text = segmentation.GetAttribute(node_tags.SUMMARY_JSON)
        try:
            return review_rows(json.loads(text)) if text else []
        except Exception as exc:  # an old or hand-edited scene: show no rows rather than fail
            logging.warning(f"SpineSegDiff: cannot show the review table: {exc}")
            return []

    @staticmethod
    def jumpTo(row) -> None:
        if row.peak_ras is None:
            return
        _ensureEngineImportable()
        from SpineSegDiffSlicerLib.review import jump_to

        jump_to(slicer.mrmlScene, row.peak_ras)

    def exportForTraining(self, parameterNode) -> pathlib.Path:
        """Add the input and its (reviewed) segmentation as one case to the data set folder."""
        _ensureEngineImportable()
        from SpineSegDiffSlicerLib.export import export_for_training

        volume = parameterNode.inputVolume
        storage = volume.GetStorageNode() if volume is not None else None
        source = storage.GetFileName() if storage is not None and storage.GetFileName() else (
            volume.GetName() if volume is not None else "")
        provenance = {"source": source, "steps": parameterNode.steps,
                      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "exported_by": "SpineSegDiff Slicer module"}
        return export_for_training(slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                   parameterNode.segmentation, volume, parameterNode.datasetFolder, provenance)


def _importNameOf(requirementLine: str) -> str:
    distribution = requirementLine.split("==", 1)[0].strip().lower()
    return next((name for name, dist in ENGINE_IMPORTS.items() if dist.lower() == distribution), distribution)


#
# Test (runs inside Slicer: Developer mode > Reload and Test, or ctest)
#


class SpineSegDiffTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegmentRerunExport()
        self.setUp()
        self.test_Cancel()

    def _phantomVolume(self):
        import SampleData

        registerSampleData()
        self.assertTrue(SAMPLE_FILE.is_file(), f"sample volume missing: {SAMPLE_FILE}")
        return SampleData.downloadSample(SAMPLE_NAME)

    def _parameters(self, logic, volume):
        parameterNode = logic.getParameterNode()
        parameterNode.inputVolume = volume
        parameterNode.modelId = DEMO_MODEL_ID
        parameterNode.samples = 2.0
        parameterNode.steps = 5
        parameterNode.device = "cpu"
        return parameterNode

    def test_SegmentRerunExport(self) -> None:
        import numpy as np

        self.delayDisplay("Segmenting the phantom with the demo model (2 samples, 5 steps)")
        logic = SpineSegDiffLogic()
        self.assertTrue(logic.setupDependencies(askConfirmation=False))
        volume = self._phantomVolume()
        parameterNode = self._parameters(logic, volume)
        logic.segment(parameterNode, waitForCompletion=True, timeout=1800)

        segmentation = parameterNode.segmentation
        self.assertIsNotNone(segmentation)
        segmentIds = {segmentation.GetSegmentation().GetNthSegmentID(i)
                      for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
        self.assertEqual(len(segmentIds), 3, segmentIds)
        uncertainty = parameterNode.uncertainty
        self.assertIsNotNone(uncertainty)
        values = slicer.util.arrayFromVolume(uncertainty)
        self.assertEqual(values.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertTrue(np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0)
        rows = logic.reviewRows(parameterNode)
        self.assertEqual(len(rows), 3)
        self.assertEqual([r.mean_uncertainty for r in rows], sorted((r.mean_uncertainty for r in rows), reverse=True))
        logic.jumpTo(rows[0])

        self.delayDisplay("Re-running: the result nodes are reused, not duplicated")
        counts = {cls: slicer.mrmlScene.GetNumberOfNodesByClass(cls)
                  for cls in ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode")}
        logic.segment(parameterNode, waitForCompletion=True, timeout=1800)
        for cls, count in counts.items():
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass(cls), count, cls)
        self.assertIs(parameterNode.segmentation, segmentation)

        self.delayDisplay("Exporting the case for retraining")
        dataset = pathlib.Path(slicer.util.tempDirectory("SpineSegDiffTestDataset")) / "dataset"
        parameterNode.datasetFolder = dataset
        labelPath = logic.exportForTraining(parameterNode)
        self.assertTrue(labelPath.is_file())
        self.assertTrue((dataset / "dataset.json").is_file())
        self.assertEqual(len(list((dataset / "imagesTr").glob("*.nii.gz"))), 1)
        self.delayDisplay("Segment, re-run and export passed")

    def test_Cancel(self) -> None:
        self.delayDisplay("Cancelling a running segmentation")
        logic = SpineSegDiffLogic()
        volume = self._phantomVolume()
        parameterNode = self._parameters(logic, volume)
        parameterNode.samples = 32.0
        parameterNode.steps = 50
        outcomes = []
        process = logic.segment(parameterNode, onFinished=outcomes.append)
        process.cancel()
        process.wait(60)
        self.assertEqual(len(outcomes), 1)
        self.assertTrue(outcomes[0].cancelled)
        self.assertIsNone(parameterNode.segmentation)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)
        self.delayDisplay("Cancel passed")
