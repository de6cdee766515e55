"""The sample slider's step inside Slicer's own process: re-fuse cached samples, no engine process.

Lowering S (or going back to an S drawn before) needs no network: the engine's torch-free
cached path (``SpineSegDiffLib.inference.cached_run``: numpy and SimpleITK only) re-fuses
the samples on disk. Running it here instead of in a new engine process saves the process
start and its imports, writing the input volume and the result maps to disk, and reading
them back (about 1 s of CPU on an 11 M-voxel volume). Anything it cannot serve (no cached
request for these voxels and settings, measurements asked for, --no-cache) returns None
and the Logic starts the engine process as before.

The request is found by the key of the volume's voxels and geometry as this process sees
them; the engine process computed its key from the file Slicer wrote, whose geometry can
differ in the last bits. So after each engine run that used the cache, ``remember_run``
records this process's key in the same ensemble folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from SpineSegDiffLib.core.errors import SpineSegDiffError
from SpineSegDiffLib.inference.cached_run import segment_from_cache
from SpineSegDiffLib.inference.model_info import ModelInfo
from SpineSegDiffLib.inference.presegmentation import default_start, default_steps, resolve_start
from SpineSegDiffLib.inference.request_index import remember_request_in
from SpineSegDiffLib.inference.settings import SegmentSettings

from .outcome import SegmentationOutcome
from .process_runner import Result
from .volumes import sitk_from_node


def _settings(info: ModelInfo, samples: int | str, steps: int) -> SegmentSettings:
    """The settings the engine's `segment` builds from the module's command line (``segment_command``)."""
    from SpineSegDiffLib.inference.auto_samples import CAP

    auto = str(samples).strip().lower() == "auto"
    start = default_start(info)
    return SegmentSettings(samples=CAP if auto else int(samples), samples_auto=auto,
                           steps=int(steps) if steps is not None else default_steps(info, start),
                           cache=True, start=start)


def _model_info(model: str) -> ModelInfo:
    from SpineSegDiffLib.model.registry import resolve_model

    return ModelInfo.read(resolve_model(model))


class CachedStep:
    """A finished step with the interface of ``EngineProcess`` (``poll``, ``wait_or_cancel``, ``cancel``):
    the result is imported, and ``on_finished`` called, at the first ``poll`` as for a process."""

    def __init__(self, do_import: Callable[[], SegmentationOutcome], on_finished: Callable) -> None:
        self._do_import = do_import
        self._on_finished = on_finished
        self._result: Result | None = None

    pid = None
    running = False

    @property
    def result(self) -> Result | None:
        return self._result

    def poll(self) -> bool:
        """Import and report (once); False: nothing is running any more."""
        if self._result is None:
            self._result = Result(returncode=0, cancelled=False, message="", summary_path=None)
            self._on_finished(self._do_import())
        return False

    def wait_or_cancel(self, timeout: float | None, what: str) -> None:
        self.poll()

    def cancel(self) -> None:  # nothing runs in the background
        pass


def start_cached_step(scene, segmentations_logic, volume_node, *, model: str, samples: int | str, steps: int,
                      device: str, on_finished: Callable[[SegmentationOutcome], None],
                      on_imported: Callable | None = None, segmentation_node=None) -> CachedStep | None:
    """The step served from the sample cache in this process, or None (start the engine process)."""
    from .results import import_result_arrays

    started = time.monotonic()
    try:
        info = _model_info(model)
        image = sitk_from_node(volume_node)
        result = segment_from_cache(image, info, _settings(info, samples, steps), device,
                                    input_name=volume_node.GetName())
    except (SpineSegDiffError, OSError, ValueError, RuntimeError) as exc:  # the engine process will say it
        logging.info(f"SpineSegDiff: the cached step did not run here ({exc})")
        return None
    if result is None:
        return None
    if not result.labels.any():
        result.summary.setdefault("notes", []).append(
            f"{volume_node.GetName()}: no structure was found (empty segmentation)")

    def do_import() -> SegmentationOutcome:
        done = Result(returncode=0, cancelled=False, message="", summary_path=None)
        try:
            imported = import_result_arrays(scene, segmentations_logic, volume_node,
                                            result.labels, result.combined_uncertainty, result.summary,
                                            segmentation_node=segmentation_node)
            if on_imported is not None:
                on_imported(imported)
            return SegmentationOutcome(done, imported.review_rows, seconds=time.monotonic() - started)
        except Exception as exc:  # shown as this run's failure, as for an engine run
            logging.exception("SpineSegDiff: importing the results failed")
            return SegmentationOutcome(done, message=str(exc), seconds=time.monotonic() - started)

    return CachedStep(do_import, on_finished)


def remember_run(volume_node, *, model: str, samples: int | str, steps: int, device: str, summary: dict) -> None:
    """After an engine run that used the cache: let this process's key of the same request find its
    ensemble folder (never fatal: without it the slider's steps run in the engine process)."""
    folder = (summary.get("cache") or {}).get("folder")
    if not folder or not (summary.get("cache") or {}).get("enabled"):
        return
    try:
        info = _model_info(model)
        settings = _settings(info, samples, steps)
        fused = info.diffusion.fused_steps_for(settings.steps, settings.fused_steps)
        remember_request_in(Path(folder), sitk_from_node(volume_node), info.path, settings, fused,
                            resolve_start(info, settings), str(summary["settings"]["device"]), device)
    except (SpineSegDiffError, OSError, ValueError, KeyError, RuntimeError) as exc:
        logging.info(f"SpineSegDiff: could not record the request for the slider ({exc})")

