"""The engine's one logger, and the CLI's `warning:` lines.

The engine reports through ``logging.getLogger("spinesegdiff")``; the CLI (and the
process the Slicer module starts) shows each warning as one ``warning: ...`` line on
stderr, which the process runner and users rely on.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "spinesegdiff"
logger = logging.getLogger(LOGGER_NAME)


def warn(message: str) -> None:
    """A problem the user should know about that does not stop the work."""
    logger.warning(message)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after set-up)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(record.levelno, "")
        return prefix + record.getMessage()


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Warnings as `warning: ...` lines on stderr (once per process)."""
    logger.setLevel(level)
    if any(getattr(h, "_spinesegdiff", False) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_CliFormatter())
    handler._spinesegdiff = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# Library use (scripts, notebooks, tests) sees warnings as before, on the current stderr;
# an application that wants them elsewhere removes this handler or sets propagate.
configure_cli_logging(logging.WARNING)
