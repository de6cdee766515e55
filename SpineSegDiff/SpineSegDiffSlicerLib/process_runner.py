"""Run the engine's command line as a separate process, stream its progress, cancel it.

Qt-free on purpose, so it is tested with pytest against real subprocesses. Threads only
*read* the pipes and queue what they read; the owner calls :meth:`EngineProcess.poll`
(from a Qt timer in Slicer) and the callbacks run there, on the GUI thread, where
touching the MRML scene and widgets is safe.

The process starts in its own process group / session, so :meth:`EngineProcess.cancel`
can stop the engine *and* anything it started (data loader workers, a CUDA helper)
without touching Slicer itself.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# How long a cancelled process gets to clean up (remove temporary files) before it is killed.
DEFAULT_GRACE_PERIOD_S = 3.0
# Keep the end of a chatty log only; the interesting part of a failure is its last lines.
MAX_LOG_LINES = 5000

ERROR_PREFIX = "error: "


@dataclass(frozen=True)
class Result:
    """How the engine process ended."""

    returncode: int | None
    cancelled: bool
    message: str  # one line for the user; empty on success
    summary_path: str | None  # from the final {"stage": "done", "summary": ...} line
    stdout_log: list[str] = field(default_factory=list)  # stdout lines that were not JSON progress
    stderr: str = ""
    presegmentation_path: str | None = None  # from a {"stage": "presegmentation", "path": ...} line

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled


def user_message(returncode: int | None, stderr_lines: Sequence[str], cancelled: bool) -> str:
    """The one line to show the user for a finished process (empty when it succeeded)."""
    if cancelled:
        return "the segmentation was cancelled; no result was kept"
    if returncode == 0:
        return ""
    # A negative code is a signal (POSIX): the process crashed, any error line is incidental.
    if returncode is not None and returncode > 0:
        for line in reversed(stderr_lines):
            text = line.strip()
            if text.startswith(ERROR_PREFIX):
                return text[len(ERROR_PREFIX):].strip()
    return f"the segmentation process crashed (exit code {returncode}); see the log"


def presegmentation_path(record: dict[str, Any]) -> str | None:
    """The presegmentation file a progress record announces (written before the ensemble
    finishes, so it can be shown first), else None."""
    if record.get("stage") == "presegmentation" and isinstance(record.get("path"), str):
        return record["path"]
    return None


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """A progress record if ``line`` is a JSON object, else None (the line is plain log)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class EngineProcess:
    """One run of the engine CLI: ``start()``, then ``poll()`` or ``wait()``, maybe ``cancel()``.

    ``on_progress(record)`` gets every JSON object the engine prints on stdout, in order;
    ``on_finished(result)`` is called exactly once. Both run inside ``poll()``/``wait()``.
    """

    def __init__(self, command: Sequence[str], on_progress: Callable[[dict], None],
                 on_finished: Callable[[Result], None], *, on_log: Callable[[str], None] | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 grace_period_s: float = DEFAULT_GRACE_PERIOD_S) -> None:
        self.command = [str(part) for part in command]
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.on_log = on_log
        self.env = env
        self.cwd = cwd
        self.grace_period_s = grace_period_s
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stdout_log: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self._stderr: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self._summary_path: str | None = None
        self._presegmentation_path: str | None = None
        self._cancelled = False
        self._exited = threading.Event()  # the watcher has queued the final result
        self._result: Result | None = None  # set once on_finished has been called
        self._kill_timer: threading.Timer | None = None

    # -- starting ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process. Raises OSError if the executable cannot be run."""
        if self._process is not None:
            raise RuntimeError("this engine process was already started")
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            # own group so taskkill /T reaches the tree; no console window popping up over Slicer
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # new session => new process group to kill
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd,
            **kwargs)
        readers = [threading.Thread(target=self._read_stdout, daemon=True, name="engine-stdout"),
                   threading.Thread(target=self._read_stderr, daemon=True, name="engine-stderr")]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._watch, args=(readers,), daemon=True, name="engine-watch").start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True from start() until on_finished has been called."""
        return self._process is not None and self._result is None

    @property
    def result(self) -> Result | None:
        return self._result

    # -- reader threads: they only queue ------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\r\n")
            record = parse_progress_line(line)
            if record is None:
                self._stdout_log.append(line)
                self._events.put(("log", line))
                continue
            if record.get("stage") == "done" and record.get("summary"):
                self._summary_path = str(record["summary"])
            self._presegmentation_path = presegmentation_path(record) or self._presegmentation_path
            self._events.put(("progress", record))

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            line = line.rstrip("\r\n")
            self._stderr.append(line)
            self._events.put(("log", line))

    def _watch(self, readers: list[threading.Thread]) -> None:
        assert self._process is not None
        returncode = self._process.wait()
        # A grandchild that still holds the pipes would keep the readers blocked: do not
        # wait for it forever, the process we own has ended.
        for reader in readers:
            reader.join(timeout=2.0)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        stderr_lines = list(self._stderr)
        result = Result(returncode=returncode, cancelled=self._cancelled,
                        message=user_message(returncode, stderr_lines, self._cancelled),
                        summary_path=self._summary_path if not self._cancelled else None,
                        stdout_log=list(self._stdout_log), stderr="\n".join(stderr_lines),
                        presegmentation_path=self._presegmentation_path)
        self._events.put(("finished", result))
        self._exited.set()

    # -- owner's thread -------------------------------------------------------------------------
    def poll(self) -> bool:
        """Deliver queued progress/log/finish callbacks. Returns True while still running."""
        while True:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                self.on_progress(payload)
            elif kind == "log":
                if self.on_log is not None:
                    self.on_log(payload)
            elif kind == "finished" and self._result is None:
                self._result = payload
                self.on_finished(payload)
        return self.running

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the process ends, delivering callbacks meanwhile (for scripts and tests).

        Raises TimeoutError if it is still running after ``timeout`` seconds; the process
        keeps running (call ``cancel()`` to stop it).
        """
        if self._process is None:
            raise RuntimeError("start() the engine process before waiting for it")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"the engine process (pid {self.pid}) is still running after "
                                   f"{timeout:g} s")
            self._exited.wait(0.05 if remaining is None else min(0.05, remaining))
        assert self._result is not None
        return self._result

    def wait_or_cancel(self, timeout: float | None, task: str) -> Result:
        """``wait``; past ``timeout`` cancel the process tree and raise RuntimeError naming ``task``."""
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.cancel()
            self.wait(60)
            raise RuntimeError(f"{task} took longer than {timeout:.0f} s and was cancelled") from None

    def cancel(self) -> None:
        """Stop the process and all its children: SIGTERM now, SIGKILL after the grace period."""
        if self._process is None or self._exited.is_set():
            return
        self._cancelled = True
        if os.name == "nt":
            # taskkill /T walks the process tree; /F because console apps ignore WM_CLOSE
            subprocess.run(["taskkill", "/PID", str(self._process.pid), "/T", "/F"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            return
        self._signal_group(signal.SIGTERM)
        # Escalate from a timer so cancel() returns at once and the GUI stays responsive.
        self._kill_timer = threading.Timer(self.grace_period_s, self._signal_group, args=(signal.SIGKILL,))
        self._kill_timer.daemon = True
        self._kill_timer.start()

    def _signal_group(self, signum: int) -> None:
        assert self._process is not None
        try:
            # The group id equals the pid because the process leads its own session. Children
            # that survive their parent are still in the group, so this reaches them too.
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group has already gone


def python_environment(engine_dir: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``python -m SpineSegDiffLib``: the engine folder first on PYTHONPATH,
    unbuffered output so progress lines arrive as they are printed."""
    env = dict(os.environ if base is None else base)
    parts = [str(engine_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def segment_command(python_executable: str | os.PathLike, input_path: str | os.PathLike,
                    model: str, samples: int | str, steps: int, device: str,
                    output_dir: str | os.PathLike, *, no_cache: bool = False,
                    measurements: bool = False) -> tuple[list[str], dict[str, str]]:
    """The `segment` command line of the engine contract, and the output paths it will write.

    ``samples``: a count, or "auto" (the engine stops once the result is stable).
    Returns ``(command, outputs)`` with ``outputs`` keys ``segmentation``, ``uncertainty``,
    ``summary`` (and ``measurements`` when asked). ``no_cache``: the run neither reads nor
    writes the sample cache (which holds results derived from patient images). The maps are
    uncompressed NIfTI: they live for one import and are deleted, so gzip would only add
    time to every step of the sample slider.
    """
    samples = "auto" if str(samples).strip().lower() == "auto" else int(samples)
    if (samples != "auto" and samples < 1) or int(steps) < 1:
        raise ValueError(f"samples ({samples}) and steps ({steps}) must be at least 1")
    from SpineSegDiffLib.core.device_names import DEVICE_NAMES

    if device not in DEVICE_NAMES:  # the panel offers no aliases
        raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)}, not {device!r}")
    output_dir = os.fspath(output_dir)
    outputs = {"segmentation": os.path.join(output_dir, "seg.nii"),
               "uncertainty": os.path.join(output_dir, "unc.nii"),
               "summary": os.path.join(output_dir, "summary.json")}
    command = [os.fspath(python_executable), "-m", "SpineSegDiffLib", "segment", os.fspath(input_path),
               "--model", str(model), "--samples", str(samples), "--steps", str(int(steps)),
               "--device", device,
               "--output-segmentation", outputs["segmentation"],
               "--output-uncertainty", outputs["uncertainty"],
               "--output-summary", outputs["summary"],
               "--progress", "json"]
    if measurements:
        outputs["measurements"] = os.path.join(output_dir, "measurements.json")
        command += ["--output-measurements", outputs["measurements"]]
    if no_cache:
        command.append("--no-cache")
    return command, outputs


if __name__ == "__main__":  # pragma: no cover - manual check: run any command, print its progress
    proc = EngineProcess(sys.argv[1:], on_progress=print, on_finished=print, on_log=print)
    proc.start()
    proc.wait()
