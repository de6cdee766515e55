"""Small real artefacts shared by the engine tests: a phantom folder and a tiny model
trained on it for a few steps (enough to exercise every code path, not to be good)."""

from __future__ import annotations

from pathlib import Path

TINY_GRID = dict(grid_spacing_mm=4.0, grid_size=64, min_slice_spacing_mm=2.0)


def make_phantom_folder(out: Path, cases: int = 2, seed: int = 5) -> Path:
    from SpineSegDiffLib.data.phantom import write_spider_folder

    return write_spider_folder(out, cases=cases, seed=seed)


def train_tiny_model(data: Path, out: Path, epochs: int = 1, **overrides) -> Path:
    from SpineSegDiffLib.training.config import TrainConfig
    from SpineSegDiffLib.training.loop import train
    from SpineSegDiffLib.training.data import load_folder

    # no calibration: a barely trained model calibrated on its validation slices predicts
    # the prior (background) everywhere, and the tests need every structure in the output
    # 2D, so tests can widen it to 2.5D (the training default)
    cfg = TrainConfig(features="tiny", image_channels=1, epochs=epochs, batch_size=8, val_fraction=0.5,
                      val_steps=2, default_samples=2, default_steps=3, fused_steps=2, calibrate=False,
                      **{**TINY_GRID, **overrides})
    cases = load_folder(data, cfg.grid_spec())
    return train(cases, cfg, out, device="cpu", log=lambda m: None).model_path
