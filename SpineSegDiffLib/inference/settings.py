"""Settings of one segmentation run (samples, steps, batching, cache), checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from SpineSegDiffLib.core.errors import InputError

if TYPE_CHECKING:
    pass



MAX_SAMPLES = 64


MAX_STEPS = 1000


MAX_BATCH_SLICES = 4096  # far above any volume's slice count; a larger value is a typo


MAX_CROP_MARGIN_MM = 500.0  # wider than any field of view: the whole slice

MAX_SEED = 2 ** 32 - 1  # numpy's and torch's seeds agree on this range


@dataclass
class SegmentSettings:
    samples: int = 5  # with samples_auto: the most samples drawn
    samples_auto: bool = False  # grow S until the result is stable (auto_samples.py)
    steps: int = 10
    fused_steps: int | None = None  # None: the model's default
    seed: int = 0
    batch_slices: int | None = None  # None: chosen from memory
    samples_per_call: int | None = None  # None: 1 on the CPU, from memory on a GPU (batch_plan)
    extras: bool = False  # also variance and mutual information
    sample_masks: bool = False  # also one labelmap per sample (per-sample measurements)
    min_component_mm3: float = 30.0
    cache: bool = False  # reuse / keep drawn samples on disk (sample_cache.py)
    cache_dir: Path | None = None  # None: sample_cache.ensembles_dir()
    start: str | None = None  # "noise" or "presegmentation"; None: the model's default
    t_max: int | None = None  # presegmentation start: noised to this step; None: the model's
    crop: str = "off"  # "auto" / "slices": sample only the spine's box / slices (inference/cropping.py)
    crop_margin_mm: float = 20.0  # --crop auto: in-plane margin around the presegmented spine

    def validate(self) -> None:
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InputError(f"--samples must be between 1 and {MAX_SAMPLES}, got {self.samples}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"--steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        if self.fused_steps is not None and not 1 <= self.fused_steps <= self.steps:
            raise InputError(f"--fused-steps must be between 1 and --steps ({self.steps}), "
                             f"got {self.fused_steps}")
        if self.batch_slices is not None and not 1 <= self.batch_slices <= MAX_BATCH_SLICES:
            raise InputError(f"--batch-slices must be between 1 and {MAX_BATCH_SLICES}, "
                             f"got {self.batch_slices}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.start not in (None, "noise", "presegmentation"):
            raise InputError(f"--start must be noise or presegmentation, got {self.start!r}")
        if self.crop not in ("auto", "slices", "off"):
            raise InputError(f"--crop must be auto, slices or off, got {self.crop!r}")
        if not 0 <= self.crop_margin_mm <= MAX_CROP_MARGIN_MM:
            raise InputError(f"--crop-margin must be between 0 and {MAX_CROP_MARGIN_MM:g} mm, "
                             f"got {self.crop_margin_mm}")
        if self.t_max is not None and self.t_max < 1:
            raise InputError(f"--t-max must be at least 1, got {self.t_max}")
