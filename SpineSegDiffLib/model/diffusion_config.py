"""Diffusion settings of a model file and the step-fusion weights, without torch.

Kept apart from ``diffusion.py`` (MONAI's scheduler, torch) so that re-fusing samples
from the sample cache, which needs only these, runs in a process that never imports
torch or MONAI (importing them costs seconds; the sample slider's step must not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.settings_dict import settings_from_dict


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion settings; stored in a model file's ``model.json``."""

    train_steps: int = 1000  # T
    schedule: str = "cosine"
    sampling_steps: int = 10  # K, DDIM steps (paper 50; Diff-UNet shows 10 works)
    fused_steps: int = 5  # Ts, the last Ts of the K steps are fused
    samples: int = 15  # S, ensemble size (paper)

    def __post_init__(self) -> None:
        problems = []
        if self.train_steps < 2:
            problems.append(f"train_steps must be >= 2, got {self.train_steps}")
        if self.schedule != "cosine":
            problems.append(f"only the cosine schedule is supported, got {self.schedule!r}")
        if not 1 <= self.sampling_steps <= self.train_steps:
            problems.append(f"sampling_steps must be in 1..{self.train_steps}, got {self.sampling_steps}")
        if self.fused_steps < 1 or self.samples < 1:
            problems.append("fused_steps and samples must be at least 1")
        if problems:
            raise ModelError("diffusion settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fused_steps_for(self, steps: int, requested: int | None = None) -> int:
        """How many of the last ``steps`` are fused: ``requested`` (else this model's), 1 .. ``steps``."""
        return max(1, min(requested or self.fused_steps, steps))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model.json") -> "DiffusionConfig":
        """Read settings written by ``to_dict``; ``source`` names the file in errors."""
        return settings_from_dict(cls, data, source, "diffusion")


def fusion_weight_array(fused_steps: int) -> np.ndarray:
    """Normalised weights exp(-a (Ts - t) / Ts), a = Ts / 2, t = 1..Ts (last step largest), float32."""
    ts = fused_steps
    t = np.arange(1, ts + 1, dtype=np.float64)
    weights = np.exp(-(ts / 2.0) * (ts - t) / ts)
    return (weights / weights.sum()).astype(np.float32)
