"""One segmentation run: start the engine process on a written input, import what it wrote.

The Logic writes the input volume and owns the parameter node; this module runs the
engine (`process_runner`), imports its outputs into the scene (`results`) and always
removes the run's work folder. Qt-free, so it is tested with pytest, slicer-core and a
real engine process.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from SpineSegDiffSlicerLib.outcome import SegmentationOutcome
from SpineSegDiffSlicerLib.process_runner import EngineProcess, python_environment, segment_command

INPUT_NAME = "input.nrrd"


def python_executable() -> str:
    """PythonSlicer (Slicer's Python with Slicer's environment); ``sys.executable`` may be the application."""
    return shutil.which("PythonSlicer") or sys.executable


def write_input_volume(volume_node, path: Path) -> None:
    """Write the volume for the engine without re-pointing the node's storage at that file."""
    import slicer.util

    # exportNode writes a copy (saveNode would re-point the storage, and "Save" would then
    # offer the temporary path); older Slicer: saveNode.
    if hasattr(slicer.util, "exportNode"):
        slicer.util.exportNode(volume_node, str(path))
    elif not slicer.util.saveNode(volume_node, str(path)):
        raise RuntimeError(f"could not write the input volume to {path}")
    if not Path(path).is_file():
        raise RuntimeError(f"could not write the input volume to {path}")


def start_segmentation(scene, segmentations_logic, volume_node, work_dir: str | os.PathLike, *,
                       model: str, samples: int, steps: int, device: str,
                       python_executable: str | os.PathLike, engine_dir: str | os.PathLike,
                       on_finished: Callable[[SegmentationOutcome], None],
                       on_imported: Callable | None = None, segmentation_node=None,
                       on_progress: Callable | None = None, on_log: Callable | None = None,
                       no_cache: bool = False, measurements: bool = False) -> EngineProcess:
    """Run the engine on ``work_dir/input.nrrd`` (already written) for ``volume_node``.

    When the process ends (inside ``process.poll()``/``wait()``), its outputs are imported
    (reusing ``segmentation_node``), ``on_imported(ImportedResults)`` runs, and
    ``on_finished(outcome)`` always runs; a failed import becomes a failed outcome.
    ``measurements``: the run also writes per-level measurements, imported as a table
    (``imported.measurements_table``, replacing the volume's previous one).
    """
    from SpineSegDiffSlicerLib.cached_step import remember_run
    from SpineSegDiffSlicerLib.measurements_table import replace_measurements_table
    from SpineSegDiffSlicerLib.results import import_results, read_summary

    work_dir = Path(work_dir)
    command, outputs = segment_command(python_executable, work_dir / INPUT_NAME, model, samples, steps,
                                       device, work_dir, no_cache=no_cache, measurements=measurements)
    started = time.monotonic()
    logging.info("SpineSegDiff: running " + " ".join(command))

    def finished(result) -> None:
        seconds = time.monotonic() - started
        try:
            if not result.ok:
                outcome = SegmentationOutcome(result, seconds=seconds)
            else:
                imported = import_results(scene, segmentations_logic, volume_node, outputs["segmentation"],
                                          outputs["uncertainty"], result.summary_path or outputs["summary"],
                                          segmentation_node=segmentation_node)
                if not no_cache:  # so the slider's next steps can run in this process (cached_step.py)
                    remember_run(volume_node, model=model, samples=samples, steps=steps, device=device,
                                 summary=read_summary(result.summary_path or outputs["summary"]))
                if "measurements" in outputs:
                    imported.measurements_table = replace_measurements_table(scene, volume_node,
                                                                             outputs["measurements"])
                if on_imported is not None:
                    on_imported(imported)
                outcome = SegmentationOutcome(result, imported.review_rows, seconds=seconds)
        except Exception as exc:  # any import failure is shown as this run's failure
            logging.exception("SpineSegDiff: importing the results failed")
            outcome = SegmentationOutcome(result, message=str(exc), seconds=seconds)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        on_finished(outcome)

    process = EngineProcess(command, on_progress=on_progress or (lambda record: None), on_finished=finished,
                            on_log=on_log, env=python_environment(engine_dir), cwd=str(work_dir))
    try:
        process.start()
    except OSError as exc:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise RuntimeError(f"could not start {command[0]} ({exc}); reinstall Slicer's Python "
                           "or the SpineSegDiff extension") from None
    return process


def wait_for(process: EngineProcess, timeout: float | None) -> None:
    """Wait for the run to end; past ``timeout`` cancel it and raise RuntimeError."""
    process.wait_or_cancel(timeout, "the segmentation")
