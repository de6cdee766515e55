"""What a trained model file records: metadata, and fine-tuning from another model's weights."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict

import torch

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.model.metadata import labels_metadata
from SpineSegDiffLib.model.network import with_context_channels
from SpineSegDiffLib.training.config import TrainConfig
from SpineSegDiffLib.training.data import GridCase


def _load_initial_weights(network, state: dict, channels: int) -> None:
    state = with_context_channels(state, channels)
    try:
        network.load_state_dict({**state, "logit_scale": torch.ones(NUM_CLASSES),
                                 "logit_bias": torch.zeros(NUM_CLASSES)})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError("the model to fine-tune from does not fit this training's network "
                         f"(--features / --image-channels differ): {first[1].strip() if len(first) > 1 else first[0]}"
                         ) from None


def model_metadata(cfg: TrainConfig, net_cfg, diff_cfg, data_summary: dict, history: list, seconds: float,
                   device: torch.device, metrics: dict, stopped_early: bool,
                   train_cases: list[GridCase], val_cases: list[GridCase]) -> dict:
    return {
        "format_version": 1,
        "id": cfg.model_id,
        "version": cfg.model_version,
        "title": f"SpineSegDiff {cfg.model_id}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spinesegdiff_version": __version__,
        "architecture": net_cfg.to_dict(),
        "diffusion": diff_cfg.to_dict(),
        "labels": labels_metadata(),
        "preprocessing": {"grid": {"spacing_mm": cfg.grid_spacing_mm, "size": cfg.grid_size,
                                   "min_slice_spacing_mm": cfg.min_slice_spacing_mm},
                          "normalisation": "per-volume percentiles (see geometry.py)",
                          "image_channels": cfg.image_channels},
        "inference_defaults": {"samples": cfg.default_samples, "steps": cfg.default_steps},
        "training": {"config": asdict(cfg), "data": data_summary,
                     "train_cases": [c.case_id for c in train_cases],
                     "validation_cases": [c.case_id for c in val_cases],
                     "epochs_run": len(history), "seconds": round(seconds, 1),
                     "device": str(device), "stopped_early": stopped_early,
                     "history": history},
        "metrics": metrics,
    }


def stage_metadata(init_metadata: dict | None, cfg: TrainConfig, data_summary: dict, history: list,
                   seconds: float, device: torch.device, metrics: dict, stopped_early: bool,
                   train_cases: list[GridCase], val_cases: list[GridCase]) -> dict:
    """model.json after a presegmenter stage: the starting model's record, plus
    ``presegmentation`` and this stage's own record under ``training.stages``."""
    from SpineSegDiffLib.model.presegmenter import PresegmentationConfig

    if init_metadata is None:
        raise InputError(f"--stage {cfg.stage} needs the metadata of the --init model")
    meta = dict(init_metadata)
    meta["presegmentation"] = PresegmentationConfig(t_max=cfg.preseg_t_max, steps=cfg.preseg_steps).to_dict()
    meta["spinesegdiff_version"] = __version__
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if cfg.model_version != TrainConfig.model_version:  # the user named a new version
        meta["version"] = cfg.model_version
    training = dict(meta.get("training", {}))
    training["stages"] = list(training.get("stages", [])) + [{
        "stage": cfg.stage, "config": asdict(cfg), "data": data_summary,
        "train_cases": [c.case_id for c in train_cases], "validation_cases": [c.case_id for c in val_cases],
        "epochs_run": len(history), "seconds": round(seconds, 1), "device": str(device),
        "stopped_early": stopped_early, "history": history, "metrics": metrics}]
    meta["training"] = training
    if cfg.stage == "diffusion-from-presegmentation":
        meta.pop("calibration", None)  # the denoiser changed: its calibration was reset
    return meta
