"""Training settings (TrainConfig) and the network width presets."""

from __future__ import annotations

from dataclasses import dataclass

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.grid.geometry import GridSpec

FEATURE_PRESETS = {"tiny": "TINY_FEATURES", "small": "SMALL_FEATURES", "paper": "PAPER_FEATURES"}


@dataclass
class TrainConfig:
    features: str = "small"  # preset name (tiny, small, paper) or comma-separated widths
    # 3 = 2.5D (the slice and its two sagittal neighbours as channels): better than 2D at
    # the same training time (benchmarks/README.md); 1 = 2D
    image_channels: int = 3
    grid_spacing_mm: float = 2.0
    grid_size: int = 160
    min_slice_spacing_mm: float = 2.0
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.05
    val_fraction: float = 0.15
    val_samples: int = 1
    val_steps: int = 5
    val_every: int = 1
    seed: int = 0
    fused_steps: int = 5
    default_samples: int = 5
    default_steps: int = 10
    empty_slice_fraction: float = 0.1  # share of slices without any label kept per epoch
    augment: bool = True
    calibrate: bool = True  # fit per-structure logit calibration on the validation slices
    max_minutes: float | None = None  # stop early (and save) after this wall time
    # what trains (training/stages.py): diffusion, presegmenter, diffusion-from-presegmentation
    stage: str = "diffusion"
    preseg_t_max: int = 400  # presegmentation start: noised to this step of T (recorded in model.json)
    preseg_steps: int = 5  # presegmentation start: DDIM steps from t_max (recorded in model.json)
    model_id: str = "spinesegdiff-custom"
    model_version: str = "0.1.0"

    def grid_spec(self) -> GridSpec:
        return GridSpec(spacing_mm=self.grid_spacing_mm, size=self.grid_size,
                        min_slice_spacing_mm=self.min_slice_spacing_mm)

    def feature_widths(self) -> tuple[int, ...]:
        from SpineSegDiffLib.model import network

        if self.features in FEATURE_PRESETS:
            return tuple(getattr(network, FEATURE_PRESETS[self.features]))
        try:
            widths = tuple(int(v) for v in self.features.split(","))
        except ValueError:
            widths = ()
        if len(widths) != 6:
            raise InputError(f"--features must be one of {', '.join(FEATURE_PRESETS)} or six "
                             f"comma-separated widths, got '{self.features}'")
        return widths
