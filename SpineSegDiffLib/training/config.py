"""Training settings (TrainConfig) and the network width presets."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

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
    # vertebra size prior on body-only slices (training/size_prior.py): budget = this x the
    # case's mean body area per slice (0 = off); and the penalty's weight in the loss
    vertebra_size_prior: float = 0.0
    size_prior_weight: float = 0.3
    # loss weight of the training pixels on a label border (1 = off; whole numbers, as the
    # weights are stored as uint8): the one-pixel boundary error of issue 11 (training/boundary.py)
    boundary_weight: int = 1
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


# options that must be at least 1 (counts) or lie in [0, 1] (fractions)
_POSITIVE = ("image_channels", "grid_size", "epochs", "batch_size", "val_samples", "val_steps",
             "val_every", "fused_steps", "default_samples", "default_steps")
_FRACTIONS = ("warmup_fraction", "val_fraction", "empty_slice_fraction")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_from_values(values: dict[str, Any], source: str = "the options") -> TrainConfig:
    """A TrainConfig from option values (a --config file's JSON, the command line), each
    checked for its type and range first: one error line naming the option, never a
    TypeError deep inside the training."""
    if not isinstance(values, dict):
        raise InputError(f"{source}: a training config is a JSON object of option: value")
    defaults = TrainConfig()
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{source}: unknown options {', '.join(unknown)}")
    for name, value in values.items():
        default = getattr(defaults, name)
        if name == "max_minutes":
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
            wanted = "a positive number of minutes or null"
        elif isinstance(default, bool):
            ok, wanted = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            ok, wanted = isinstance(value, str), "a text"
        if not ok:
            raise InputError(f"{source}: {_option(name)} should be {wanted}, got {value!r}")
        if name in _POSITIVE and value < 1:
            raise InputError(f"{source}: {_option(name)} must be at least 1, got {value}")
        if name in _FRACTIONS and not 0 <= value <= 1:
            raise InputError(f"{source}: {_option(name)} must be between 0 and 1, got {value}")
        if name in ("vertebra_size_prior", "size_prior_weight") and value < 0:
            raise InputError(f"{source}: {_option(name)} must be 0 (off) or more, got {value}")
        if name == "boundary_weight" and not 1 <= value <= 255:
            raise InputError(f"{source}: {_option(name)} must be a whole number from 1 (off) to 255, got {value}")
        if name in ("grid_spacing_mm", "min_slice_spacing_mm", "lr") and not value > 0:
            raise InputError(f"{source}: {_option(name)} must be positive, got {value}")
    cfg = TrainConfig(**values)
    cfg.feature_widths()  # a bad --features is an error line now, not after the data is read
    return cfg
