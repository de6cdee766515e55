"""Progress reporting for long work: a human progress bar, JSON lines, or nothing.

`--progress json` prints one JSON object per line on stdout (the Slicer module reads
them); `bar` draws a tqdm bar on stderr; `none` is silent. Every reporter takes the
same calls, so engine code never cares which one it talks to.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

STAGES = ("load", "grid", "presegmentation", "encode", "sample", "fuse", "write", "train", "validate", "evaluate", "done")


class Progress:
    """Base reporter: remembers the start time to estimate seconds left."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._stage_start = self._start

    def seconds_left(self, fraction: float) -> float | None:
        elapsed = time.monotonic() - self._start
        if fraction <= 0.01 or elapsed < 0.5:
            return None
        return max(0.0, elapsed * (1.0 - fraction) / fraction)

    def update(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        """Report that overall work is `fraction` (0..1) done, now in `stage`."""

    def done(self, **extra: Any) -> None:
        self.update("done", 1.0, "finished", **extra)

    def close(self) -> None:
        pass


class NullProgress(Progress):
    pass


class JsonProgress(Progress):
    """One JSON object per line: stage, fraction, seconds_left, sample, step, message."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def update(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        record = {"stage": stage, "fraction": round(float(min(max(fraction, 0.0), 1.0)), 4),
                  "seconds_left": self.seconds_left(fraction), "sample": extra.pop("sample", None),
                  "step": extra.pop("step", None), "message": message}
        if record["seconds_left"] is not None:
            record["seconds_left"] = round(record["seconds_left"], 1)
        record.update(extra)
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class BarProgress(Progress):
    """A tqdm bar on stderr, in per-mille of the whole job."""

    def __init__(self, description: str = "spinesegdiff") -> None:
        super().__init__()
        from tqdm import tqdm

        self._bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self._n = 0

    def update(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        target = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        if target > self._n:
            self._bar.update(target - self._n)
            self._n = target
        postfix = message or stage
        for key in ("loss", "dice"):
            if key in extra and extra[key] is not None:
                postfix += f" {key}={extra[key]:.4f}"
        self._bar.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        self._bar.close()


def make_progress(kind: str) -> Progress:
    if kind == "json":
        return JsonProgress()
    if kind == "bar":
        return BarProgress()
    return NullProgress()


class SubProgress:
    """Maps a sub-task's 0..1 onto [start, end] of the whole job."""

    def __init__(self, parent: Progress, stage: str, start: float, end: float) -> None:
        self.parent, self.stage, self.start, self.end = parent, stage, start, end

    def __call__(self, fraction: float, message: str = "", **extra: Any) -> None:
        self.parent.update(self.stage, self.start + (self.end - self.start) * fraction, message, **extra)
