"""What the panel shows before a run: the device the engine would use and its caches.

Everything comes from ``spinesegdiff info --json`` run as an engine process (torch lives
there, never in Slicer's GUI process), started like a segmentation (``EngineProcess``),
so the panel stays responsive while torch loads. Pure formatting otherwise; Qt-free.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from SpineSegDiffSlicerLib.process_runner import EngineProcess, python_environment

try:  # the panel's texts, translatable as in Slicer's own modules; plain text outside Slicer
    from slicer.i18n import tr as _
except ImportError:
    def _(text: str) -> str:
        return text

CACHE_TITLES = {"models": _("Model cache"), "ensembles": _("Sample cache")}
# shown beside the sample cache: its files are computed from the images segmented
SAMPLE_CACHE_NOTE = _("holds ensemble samples computed from the images you segmented (derived from patient "
                      "images); clear it after working with patient data, or turn it off")


def info_command(python_executable: str | os.PathLike, clear: Iterable[str] = ()) -> list[str]:
    """``python -m SpineSegDiffLib info --json`` with one ``--clear-cache KIND`` per kind to clear."""
    command = [os.fspath(python_executable), "-m", "SpineSegDiffLib", "info", "--json"]
    for kind in dict.fromkeys(clear):
        if kind not in CACHE_TITLES:
            raise ValueError(f"unknown cache '{kind}'; choose one of {', '.join(CACHE_TITLES)}")
        command += ["--clear-cache", kind]
    return command


def start_info(python_executable: str | os.PathLike, engine_dir: str | os.PathLike,
               on_report: Callable[[dict], None], on_failed: Callable[[str], None],
               clear: Iterable[str] = ()) -> EngineProcess:
    """Start ``info --json`` (clearing ``clear`` first); ``on_report(report)`` or
    ``on_failed(message)`` runs inside the process's ``poll()``/``wait()``."""
    reports: list[dict] = []

    def finished(result) -> None:
        if result.ok and reports:
            on_report(reports[-1])
        else:
            on_failed(result.message or "the engine printed no report")

    process = EngineProcess(info_command(python_executable, clear),
                            on_progress=lambda record: reports.append(record) if "devices" in record else None,
                            on_finished=finished, env=python_environment(engine_dir))
    process.start()
    return process


def read_info(python_executable: str | os.PathLike, engine_dir: str | os.PathLike,
              clear: Iterable[str] = (), timeout: float = 120.0) -> dict:
    """Run ``info --json`` to the end (scripts, tests); RuntimeError with the engine's message."""
    out: dict = {}
    process = start_info(python_executable, engine_dir, out.update, lambda message: out.update(error=message), clear)
    process.wait(timeout)
    if "error" in out:
        raise RuntimeError(f"spinesegdiff info failed: {out['error']}")
    return out


def format_size(n_bytes: int) -> str:
    if n_bytes < 1024 ** 2:
        return f"{n_bytes / 1024:.0f} KB"
    return f"{n_bytes / 1024 ** 2:.1f} MB" if n_bytes < 1024 ** 3 else f"{n_bytes / 1024 ** 3:.2f} GB"


def available_devices(report: dict) -> list[str]:
    """The device names a run can really use here ('auto' and 'cpu' always; all while torch is unknown)."""
    devices = report["devices"]
    if not devices.get("torch"):
        return ["auto", "cuda", "mps", "cpu"]
    return ["auto"] + (["cuda"] if devices["cuda"] else []) + (["mps"] if devices["mps"] else []) + ["cpu"]


def device_text(report: dict, requested: str = "auto") -> str:
    """One line: what a run with ``--device requested`` will use, with the fallback said."""
    devices = report["devices"]
    if not devices.get("torch"):
        return _("not known yet: torch is not installed (Segment offers to install it)")
    cpu = devices["cpu"]
    cpu_text = _("CPU ({threads} threads of {cores} cores)").format(threads=cpu["threads"], cores=cpu["cores"])
    target = devices["auto"] if requested == "auto" else requested
    if target == "cuda" and devices["cuda"]:
        gpu = devices["cuda"][0]
        text = _("CUDA GPU {index}: {name} ({memory} GB)").format(index=gpu["index"], name=gpu["name"],
                                                                 memory=gpu["memory_gb"])
    elif target == "mps" and devices["mps"]:
        text = _("Apple GPU (MPS)")
    else:
        text = cpu_text
        if requested in ("cuda", "mps"):
            missing = _("CUDA GPU") if requested == "cuda" else _("Apple GPU (MPS)")
            text += ": " + _("no {device} here, the run falls back to the CPU").format(device=missing)
    return f"{text}; torch {devices['torch']}"


def cache_rows(report: dict) -> list[dict]:
    """Per cache: kind, title, folder, size text and what clearing removes (sample cache note included)."""
    rows = []
    for kind, title in CACHE_TITLES.items():
        cache = report["caches"][kind]
        note = SAMPLE_CACHE_NOTE if kind == "ensembles" else cache["clears"]
        rows.append({"kind": kind, "title": title, "folder": cache["folder"],
                     "size": format_size(int(cache["bytes"])), "note": note})
    return rows
