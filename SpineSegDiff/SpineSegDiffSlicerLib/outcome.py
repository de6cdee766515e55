"""What one segmentation run ended with, as the panel and scripts need it (pure Python)."""

from __future__ import annotations

from typing import Any, Iterable


class SegmentationOutcome:
    """The engine process's result plus what importing it gave (review rows or a message)."""

    def __init__(self, result: Any, reviewRows: Iterable | None = None, message: str = "",
                 seconds: float | None = None) -> None:
        self.result = result
        self.reviewRows = list(reviewRows or [])
        # a failed import has its own message even when the engine itself succeeded
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
