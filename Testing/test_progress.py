"""core.progress: the JSON lines the Slicer module parses, the bar, and sub-task mapping."""

from __future__ import annotations

import io
import json
import time

from SpineSegDiffLib.core.progress import (BarProgress, JsonProgress, NullProgress, SubProgress,
                                           make_progress)


def test_json_lines_follow_the_contract():
    stream = io.StringIO()
    progress = JsonProgress(stream)
    progress.update("sample", 0.25, "sampling", sample=2, step=3)
    progress.update("write", 1.7, "too far")  # clamped
    progress.done(summary="s.json")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["stage"] for r in records] == ["sample", "write", "done"]
    assert records[0] == {"stage": "sample", "fraction": 0.25, "seconds_left": None, "sample": 2, "step": 3,
                          "message": "sampling"}  # too early to estimate the time left
    assert records[1]["fraction"] == 1.0 and records[1]["sample"] is None
    assert records[2]["summary"] == "s.json" and records[2]["fraction"] == 1.0


def test_seconds_left_is_estimated_from_the_elapsed_time():
    progress = JsonProgress(io.StringIO())
    progress._start = time.monotonic() - 10.0  # as if started 10 s ago
    left = progress.seconds_left(0.25)
    assert left is not None and 29.0 <= left <= 31.0
    assert progress.seconds_left(0.005) is None  # too little done to say
    assert progress.seconds_left(1.0) == 0.0


def test_sub_progress_maps_onto_its_share():
    stream = io.StringIO()
    sub = SubProgress(JsonProgress(stream), "sample", 0.2, 0.6)
    sub(0.0)
    sub(0.5, "half", step=4)
    sub(1.0)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["fraction"] for r in records] == [0.2, 0.4, 0.6]
    assert records[1]["message"] == "half" and records[1]["step"] == 4 and {r["stage"] for r in records} == {"sample"}


def test_make_progress_kinds_and_the_bar(capsys):
    assert isinstance(make_progress("json"), JsonProgress)
    assert type(make_progress("none")) is NullProgress
    bar = make_progress("bar")
    assert isinstance(bar, BarProgress)
    bar.update("train", 0.5, "epoch 2", loss=0.1234)
    assert "epoch 2 loss=0.1234" in bar._bar.postfix
    bar.update("train", 0.4)  # never moves backwards
    assert bar._n == 500
    bar.close()
    assert "50%" in capsys.readouterr().err
