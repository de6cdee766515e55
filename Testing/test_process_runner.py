"""The Slicer module's engine runner against real subprocesses (no Qt needed)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from SpineSegDiffSlicerLib.process_runner import (EngineProcess, parse_progress_line, python_environment,
                                              segment_command, user_message)

from engine_fixtures import process_alive, wait_until

posix_only = pytest.mark.skipif(os.name == "nt", reason="process groups and signals are POSIX here")

# A stand-in for `python -m SpineSegDiffLib segment ... --progress json`: its behaviour is
# chosen by the first argument, so each test drives a real process through one scenario.
FAKE_ENGINE = textwrap.dedent(r'''
    import json, os, signal, subprocess, sys, time
    mode, workdir = sys.argv[1], sys.argv[2]

    def progress(stage, fraction, **extra):
        record = dict(stage=stage, fraction=fraction, seconds_left=None, sample=None, step=None,
                      message=stage)
        record.update(extra)
        print(json.dumps(record), flush=True)

    if mode == "ok":
        progress("load", 0.0)
        print("loading weights (plain log line)", flush=True)
        for step in range(1, 4):
            progress("sample", step / 4, step=step)
        print("a warning on stderr", file=sys.stderr, flush=True)
        progress("done", 1.0, summary=os.path.join(workdir, "summary.json"))
    elif mode == "error":
        progress("load", 0.1)
        print("error: an earlier, less relevant problem", file=sys.stderr)
        print("Traceback-free noise", file=sys.stderr)
        print("error: scan.nrrd is not a 3D image; choose a 3D MRI volume", file=sys.stderr)
        sys.exit(2)
    elif mode == "exit3":
        print("something went wrong without an error line", file=sys.stderr)
        sys.exit(3)
    elif mode == "segfault":
        print("error: this line must not be reported for a signal", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode in ("child", "stubborn-child"):
        # A child that keeps running like a data-loader worker; the stubborn one ignores
        # SIGTERM so only the SIGKILL escalation can stop it.
        code = "import signal, time\n"
        if mode == "stubborn-child":
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += "open(%r, 'w').write('ready')\ntime.sleep(120)\n" % os.path.join(workdir, "child.ready")
        child = subprocess.Popen([sys.executable, "-c", code])
        with open(os.path.join(workdir, "child.pid"), "w") as f:
            f.write(str(child.pid))
        progress("sample", 0.2)
        time.sleep(120)
    elif mode == "sleep":
        time.sleep(120)
''')


@pytest.fixture
def engine(tmp_path):
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    started: list[EngineProcess] = []

    def make(mode: str, **kwargs) -> tuple[EngineProcess, dict]:
        seen = {"progress": [], "finished": [], "log": [], "threads": set()}

        def on_progress(record):
            seen["threads"].add(threading.current_thread().name)
            seen["progress"].append(record)

        def on_finished(result):
            seen["threads"].add(threading.current_thread().name)
            seen["finished"].append(result)

        proc = EngineProcess([sys.executable, str(script), mode, str(tmp_path)], on_progress, on_finished,
                             on_log=seen["log"].append, **kwargs)
        proc.start()
        started.append(proc)
        return proc, seen

    yield make
    for proc in started:  # never leave a sleeping process behind a failed test
        if proc.running:
            proc.grace_period_s = 0.1
            proc.cancel()
            try:
                proc.wait(10)
            except TimeoutError:
                pass


def test_progress_is_delivered_in_order_on_the_polling_thread(engine, tmp_path):
    proc, seen = engine("ok")
    result = proc.wait(30)
    assert result.ok and result.returncode == 0 and not result.cancelled
    assert result.message == ""
    assert [r["stage"] for r in seen["progress"]] == ["load", "sample", "sample", "sample", "done"]
    assert [r["step"] for r in seen["progress"] if r["stage"] == "sample"] == [1, 2, 3]
    assert result.summary_path == str(tmp_path / "summary.json")
    assert result.stdout_log == ["loading weights (plain log line)"]
    assert "a warning on stderr" in result.stderr
    assert "loading weights (plain log line)" in seen["log"] and "a warning on stderr" in seen["log"]
    # callbacks ran in the thread that called wait(), never in the reader threads
    assert seen["threads"] == {threading.current_thread().name}
    assert len(seen["finished"]) == 1 and seen["finished"][0] is result
    assert not proc.running and proc.poll() is False and len(seen["finished"]) == 1


def test_poll_loop_like_a_qt_timer(engine):
    proc, seen = engine("ok")
    polls = 0
    while proc.poll():
        polls += 1
        time.sleep(0.01)
        assert polls < 3000, "the process never finished"
    assert proc.result is not None and proc.result.ok
    assert seen["progress"][-1]["stage"] == "done"


def test_error_line_becomes_the_user_message(engine):
    proc, _ = engine("error")
    result = proc.wait(30)
    assert result.returncode == 2 and not result.ok
    assert result.message == "scan.nrrd is not a 3D image; choose a 3D MRI volume"
    assert result.summary_path is None


def test_exit_without_error_line_is_reported_as_a_crash(engine):
    result = engine("exit3")[0].wait(30)
    assert result.returncode == 3
    assert result.message == "the segmentation process crashed (exit code 3); see the log"
    assert "something went wrong" in result.stderr


@posix_only
def test_signal_crash_ignores_stale_error_lines(engine):
    result = engine("segfault")[0].wait(30)
    assert result.returncode == -signal.SIGSEGV
    assert "crashed" in result.message and str(-signal.SIGSEGV) in result.message
    assert "must not be reported" not in result.message


@posix_only
@pytest.mark.parametrize("mode", ["child", "stubborn-child"])
def test_cancel_kills_the_process_and_its_children(engine, tmp_path, mode):
    proc, seen = engine(mode, grace_period_s=0.5)
    assert wait_until(lambda: (tmp_path / "child.ready").exists() and (tmp_path / "child.pid").exists())
    child_pid = int((tmp_path / "child.pid").read_text())
    engine_pid = proc.pid
    assert process_alive(child_pid) and process_alive(engine_pid)
    started = time.monotonic()
    proc.cancel()
    result = proc.wait(15)
    assert result.cancelled and not result.ok
    assert result.message.startswith("the segmentation was cancelled")
    assert not process_alive(engine_pid)
    assert wait_until(lambda: not process_alive(child_pid), timeout=10), f"child {child_pid} survived cancel"
    assert time.monotonic() - started < 10
    assert len(seen["finished"]) == 1
    proc.cancel()  # a second cancel after the end is harmless


def test_wait_times_out_and_leaves_the_process_running(engine):
    proc, seen = engine("sleep")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        proc.wait(0.3)
    assert 0.25 < time.monotonic() - started < 5
    assert proc.running and seen["finished"] == []
    proc.grace_period_s = 0.2
    proc.cancel()
    assert proc.wait(15).cancelled


def test_missing_executable_raises_at_start(tmp_path):
    proc = EngineProcess([str(tmp_path / "no-such-python"), "-m", "x"], print, print)
    with pytest.raises(OSError):
        proc.start()


def test_pure_helpers():
    assert parse_progress_line('{"stage": "fuse", "fraction": 0.5}') == {"stage": "fuse", "fraction": 0.5}
    assert parse_progress_line("[1, 2]") is None and parse_progress_line("{not json") is None
    assert user_message(0, ["error: x"], cancelled=False) == ""
    assert user_message(2, ["error: a", "error: b "], cancelled=False) == "b"
    env = python_environment("/opt/engine", base={"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == ["/opt/engine", "/x"] and env["PYTHONUNBUFFERED"] == "1"


def test_segment_command_follows_the_cli_contract(tmp_path):
    command, outputs = segment_command("/py", tmp_path / "in.nrrd", "demo", 2, 5, "cpu", tmp_path)
    assert command[:5] == ["/py", "-m", "SpineSegDiffLib", "segment", str(tmp_path / "in.nrrd")]
    options = dict(zip(command[5::2], command[6::2]))
    assert options == {"--model": "demo", "--samples": "2", "--steps": "5", "--device": "cpu",
                       "--output-segmentation": outputs["segmentation"],
                       "--output-uncertainty": outputs["uncertainty"],
                       "--output-summary": outputs["summary"], "--progress": "json"}
    assert outputs["segmentation"].endswith(".nii") and Path(outputs["summary"]).parent == tmp_path
    assert outputs["uncertainty"].endswith(".nii")  # uncompressed: read once, then deleted
    auto, _ = segment_command("/py", tmp_path / "in.nrrd", "demo", "auto", 5, "cpu", tmp_path)
    assert auto[auto.index("--samples") + 1] == "auto"
    with pytest.raises(ValueError):
        segment_command("/py", "in.nrrd", "demo", 0, 5, "cpu", tmp_path)
    with pytest.raises(ValueError):
        segment_command("/py", "in.nrrd", "demo", 2, 5, "gpu", tmp_path)


def test_segment_command_parses_with_the_real_cli(tmp_path):
    """The options the Slicer module passes are the ones the engine's parser accepts."""
    import argparse

    from SpineSegDiffLib.cli import entry as cli

    if "segment" not in cli.COMMANDS:
        pytest.skip("the engine's segment command is not registered yet")
    command, outputs = segment_command(sys.executable, tmp_path / "in.nrrd", "model.zip", 3, 7, "auto", tmp_path)
    parser = argparse.ArgumentParser()
    cli._load(cli.COMMANDS["segment"][0]).configure_parser(parser)
    args = vars(parser.parse_args(command[4:]))
    values = {str(v) for v in args.values()}
    assert {"3", "7", "auto", "json", "model.zip", str(tmp_path / "in.nrrd"),
            outputs["segmentation"], outputs["uncertainty"], outputs["summary"]} <= values
    assert args["no_cache"] is False and args["output_measurements"] is None and "measurements" not in outputs
    # the panel's "Levels and measurements" and "Use the sample cache" switches, and MPS
    command, outputs = segment_command(sys.executable, tmp_path / "in.nrrd", "model.zip", 3, 7, "mps", tmp_path,
                                       no_cache=True, measurements=True)
    args = vars(parser.parse_args(command[4:]))
    assert args["no_cache"] is True and args["device"] == "mps"
    assert str(args["output_measurements"]) == outputs["measurements"] and outputs["measurements"].endswith(".json")
