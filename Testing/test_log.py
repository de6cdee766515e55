"""core.log: the engine's one logger, and the CLI's `warning:` lines on stderr."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_warnings_are_warning_lines_on_the_current_stderr():
    run = _run("import io, sys\n"
               "from SpineSegDiffLib.core import log\n"
               "log.logger.info('library use: warnings only')\n"
               "log.warn('first')\n"
               "log.configure_cli_logging(); log.configure_cli_logging()  # twice: still one handler\n"
               "log.logger.info('the CLI shows information plainly')\n"
               "sys.stderr = io.StringIO(); log.warn('captured'); captured = sys.stderr.getvalue()\n"
               "sys.stderr = sys.__stderr__; log.logger.error('bad'); print(repr(captured))")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["warning: first", "the CLI shows information plainly", "error: bad"]
    assert run.stdout.strip() == repr("warning: captured\n")


def test_the_logger_is_the_standard_spinesegdiff_logger():
    run = _run("import logging\n"
               "from SpineSegDiffLib.core import log\n"
               "assert log.logger is logging.getLogger('spinesegdiff')\n"
               "log.configure_cli_logging(logging.INFO); log.logger.info('plain info')")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["plain info"]


def test_cli_problems_end_in_one_error_line(cli, tmp_path):
    # a missing input and an unknown model: exit 2, the last stderr line is the error
    run = cli("segment", tmp_path / "missing.nii.gz", "--model", "no-such-model")
    assert run.returncode == 2
    assert [line for line in run.stderr.splitlines() if line.strip()][-1].startswith("error: ")
