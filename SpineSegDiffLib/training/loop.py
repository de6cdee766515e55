"""The training loop: patient-wise split, augmentation, partial labels, validation
Dice, resumable checkpoints, mixed precision on CUDA, DistributedDataParallel under
torchrun, and a model `.zip` at the end. What trains and its loss come from the stage
(``training/stages.py``); every stage shares this loop."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.model.devices import autocast_context, choose_device
from SpineSegDiffLib.training.augment import random_affine, random_intensity
from SpineSegDiffLib.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from SpineSegDiffLib.training.config import TrainConfig
from SpineSegDiffLib.training.data import GridCase, one_hot
from SpineSegDiffLib.training.distributed import DistInfo, init_distributed
from SpineSegDiffLib.training.model_record import model_metadata, stage_metadata
from SpineSegDiffLib.training.schedule import _lr_lambda, _time_lr_factor
from SpineSegDiffLib.training.stages import (
    Stage,
    build_stage,
    check_stage,
    prepare_network,
)
from SpineSegDiffLib.training.size_prior import prior_channel
from SpineSegDiffLib.training.targets import SliceSet
from SpineSegDiffLib.training.validation import prediction_dice, validation_dice


class _BatchSource:
    """Gathers training batches; on a GPU the whole slice set lives on the device, so
    batches need no host-to-device copies (on the H100 this did not shorten an epoch:
    the small network's own step is what limits training there)."""

    def __init__(self, slices: SliceSet, device: torch.device) -> None:
        self.device = device
        self.on_device = device.type == "cuda"
        if self.on_device:
            self.inputs = torch.from_numpy(slices.inputs).to(device)
            self.masks = torch.from_numpy(one_hot(slices.labels)).to(device=device, dtype=torch.uint8)
            self.weights = torch.from_numpy(slices.weights).to(device)
        self.slices = slices
        self.prior = None
        if slices.prior_budget is not None and bool(slices.prior_budget.any()):
            self.prior = (torch.from_numpy(slices.prior_budget).to(device),
                          torch.from_numpy(slices.prior_band).to(device))

    def get(self, sel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image, one-hot mask and loss weights; with a size prior the weights carry it as
        one more channel (``size_prior.split_prior_channel`` takes it off again)."""
        if self.on_device:
            idx = torch.from_numpy(np.asarray(sel)).to(self.device)
            image, mask, weights = self.inputs[idx], self.masks[idx].float(), self.weights[idx].float()
        else:
            s = self.slices
            image, mask = torch.from_numpy(s.inputs[sel]), torch.from_numpy(one_hot(s.labels[sel]))
            weights = torch.from_numpy(s.weights[sel]).float()
        if self.prior is not None:
            idx = torch.from_numpy(np.asarray(sel)).to(self.prior[0].device)
            channel = prior_channel(self.prior[0][idx], self.prior[1][idx], *weights.shape[2:])
            weights = torch.cat([weights, channel.to(weights.device)], 1)
        return image, mask, weights


def _epoch_indices(slices: SliceSet, rng: np.random.Generator, empty_fraction: float) -> np.ndarray:
    labelled = np.nonzero(slices.has_label)[0]
    empty = np.nonzero(~slices.has_label)[0]
    keep_empty = rng.permutation(empty)[: int(round(len(labelled) * empty_fraction))]
    return rng.permutation(np.concatenate([labelled, keep_empty]))


@dataclass
class TrainResult:
    model_path: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Progress:
    """What a checkpoint keeps between runs."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    best_state: dict | None = None
    elapsed_before: float = 0.0


@dataclass
class _Run:
    """Everything one training run works with."""

    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    network: torch.nn.Module
    model_for_loss: torch.nn.Module
    stage: Stage
    diff_cfg: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    per_epoch: int
    log: Callable[[str], None]


def _choose_run_device(device: str, dist_info: DistInfo, log) -> torch.device:
    if dist_info.world > 1 and torch.cuda.is_available():
        return torch.device("cuda", dist_info.local_rank)
    dev, note = choose_device(device)
    if note and dist_info.main:
        log(f"note: {note}")
    return dev


def _build_run(cfg: TrainConfig, dist_info: DistInfo, dev: torch.device, train_set: SliceSet,
               init_state: dict | None, log) -> _Run:
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig
    from SpineSegDiffLib.model.presegmenter import PresegmentationConfig

    net_cfg = NetworkConfig(image_channels=cfg.image_channels, num_classes=NUM_CLASSES,
                            features=cfg.feature_widths())
    diff_cfg = DiffusionConfig(sampling_steps=cfg.default_steps, fused_steps=cfg.fused_steps)
    preseg_cfg = PresegmentationConfig(t_max=cfg.preseg_t_max, steps=cfg.preseg_steps)
    network = DiffUNet(net_cfg)
    prepare_network(cfg.stage, network, init_state, cfg.image_channels)
    network = network.to(dev)
    stage = build_stage(cfg.stage, network, diff_cfg, preseg_cfg, cfg.size_prior_weight)
    model_for_loss = network
    if dist_info.world > 1:
        if cfg.stage != "diffusion":
            raise InputError(f"--stage {cfg.stage} runs in one process; start it without torchrun")
        from torch.nn.parallel import DistributedDataParallel as DDP

        model_for_loss = DDP(network, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(stage.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = max(1, math.ceil(len(_epoch_indices(train_set, np.random.default_rng(0), cfg.empty_slice_fraction))
                                 / (cfg.batch_size * dist_info.world)))
    total_steps = per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(total_steps * cfg.warmup_fraction)))
    return _Run(cfg, dist_info, dev, network, model_for_loss, stage, diff_cfg, optimizer, scheduler,
                per_epoch, log)


def _resume(run: _Run, ckpt_path: Path) -> _Progress:
    """Where an interrupted run stopped (checks in ``checkpoint.py``); a fresh start when
    there is no checkpoint (said as a warning)."""
    state = load_checkpoint(ckpt_path, run.device)
    if state is None:
        return _Progress()
    if state.get("stage", "diffusion") != run.cfg.stage:
        raise InputError(f"{ckpt_path} is a checkpoint of stage '{state.get('stage', 'diffusion')}', not "
                         f"'{run.cfg.stage}'; use another --out folder or the same --stage")
    restore(ckpt_path, state, run.network, run.optimizer, run.scheduler)
    if run.dist.main:
        run.log(f"resumed from {ckpt_path} at epoch {int(state['epoch'])}")
    return _Progress(int(state["epoch"]), json.loads(state["history_json"]), float(state["best"]),
                     state.get("best_model"), float(state.get("elapsed", 0.0)))


def _elapsed(progress: _Progress, t_start: float) -> float:
    return progress.elapsed_before + time.perf_counter() - t_start


def _train_epoch(run: _Run, batches: _BatchSource, order: np.ndarray, gen: torch.Generator, step: int,
                 epoch: int, elapsed: Callable[[], float], report) -> tuple[list[float], int]:
    """One pass over ``order``; returns the batch losses and the step count after it."""
    cfg = run.cfg
    losses = []
    total_steps = run.per_epoch * cfg.epochs
    for b in range(run.per_epoch):
        sel = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        if len(sel) == 0:
            sel = order[: cfg.batch_size]
        image, mask, weights = batches.get(sel)
        if cfg.augment:
            image, mask, weights = random_affine(image, mask, weights, gen)
            image = random_intensity(image, gen)
        with autocast_context(run.device):
            loss = run.stage.loss(run.model_for_loss, image, mask, weights, gen)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.stage.trainable, 1.0)
        run.optimizer.step()
        run.scheduler.step()
        step += 1
        if cfg.max_minutes:  # a time budget: the cosine follows elapsed time, not epochs
            factor = _time_lr_factor(elapsed(), cfg.max_minutes * 60, cfg.warmup_fraction)
            for group in run.optimizer.param_groups:
                group["lr"] = cfg.lr * factor
        losses.append(float(loss.detach()))
        if report and run.dist.main:
            report("train", step / total_steps, f"epoch {epoch + 1}/{cfg.epochs}", loss=losses[-1])
        if cfg.max_minutes and run.dist.world == 1 and elapsed() > cfg.max_minutes * 60:
            # a short budget must not wait for the end of a long epoch (one process only:
            # under torchrun every rank must take the same number of steps)
            break
    return losses, step


def _validate(run: _Run, val_set: SliceSet) -> dict[str, float]:
    cfg = run.cfg
    if run.stage.predict is not None:
        return prediction_dice(run.network, val_set, run.stage.predict, run.device)
    return validation_dice(run.network, val_set, run.diff_cfg, cfg.val_samples, cfg.val_steps, run.device,
                           seed=cfg.seed)


def _record_validation(run: _Run, progress: _Progress, record: dict, val_set: SliceSet) -> None:
    dice = _validate(run, val_set)
    record["val_dice"] = dice
    mean = float(np.nanmean(list(dice.values()))) if any(not math.isnan(v) for v in dice.values()) else -1.0
    record["val_dice_mean"] = mean
    if mean >= progress.best:
        progress.best = mean
        progress.best_state = {k: v.detach().cpu().clone() for k, v in run.network.state_dict().items()}


def _log_and_checkpoint(run: _Run, progress: _Progress, record: dict, elapsed: float, ckpt_path: Path) -> None:
    msg = f"epoch {record['epoch']}/{run.cfg.epochs} loss {record['loss']:.4f}"
    if "val_dice" in record:
        msg += " val Dice " + " ".join(f"{k} {v:.3f}" for k, v in record["val_dice"].items())
    run.log(msg)
    state = {"model": run.network.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "epoch": record["epoch"], "best": progress.best,
             "history_json": json.dumps(progress.history), "elapsed": elapsed, "stage": run.cfg.stage}
    if progress.best_state is not None:
        state["best_model"] = progress.best_state
    save_checkpoint(ckpt_path, state)


def _calibrate(run: _Run, final_state: dict, val_set: SliceSet) -> tuple[dict, dict]:
    from SpineSegDiffLib.model.calibration import calibrate

    cfg = run.cfg
    run.network.load_state_dict(final_state)
    calibration = calibrate(run.network, val_set.inputs, one_hot(val_set.labels), val_set.weights,
                            run.diff_cfg, run.device, cfg.default_steps, cfg.fused_steps)
    run.log("calibrated logits on the validation slices: BCE "
            + " ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(calibration["bce_before"], calibration["bce_after"])))
    return {k: v.detach().cpu() for k, v in run.network.state_dict().items()}, calibration


def train(cases: list[GridCase], cfg: TrainConfig, out_dir: str | Path, device: str = "auto",
          resume: bool = False, progress=None, data_summary: dict | None = None,
          log: Callable[[str], None] = print, init_state: dict | None = None,
          init_metadata: dict | None = None) -> TrainResult:
    """Train the stage ``cfg.stage`` on `cases` (already on the model grid); write `out_dir/model.zip`.

    ``init_state`` / ``init_metadata``: the model to start from (fine-tuning; required by
    the presegmenter stages, whose model file keeps the starting model's record).
    A run that fails leaves no empty output folder behind (one it did not find).
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        return _train(cases, cfg, out_dir, device, resume, progress, data_summary, log, init_state,
                      init_metadata)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _train(cases: list[GridCase], cfg: TrainConfig, out_dir: Path, device: str, resume: bool, progress,
           data_summary: dict | None, log: Callable[[str], None], init_state: dict | None,
           init_metadata: dict | None) -> TrainResult:
    from SpineSegDiffLib.data.spider import patient_split
    from SpineSegDiffLib.model.modelfile import save_model

    check_stage(cfg.stage, init_state)
    dist_info = init_distributed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = _choose_run_device(device, dist_info, log)
    torch.manual_seed(cfg.seed + dist_info.rank)
    rng = np.random.default_rng(cfg.seed + 7919 * dist_info.rank)

    train_cases, val_cases = patient_split(cases, cfg.val_fraction, cfg.seed)
    spacing = float(cfg.grid_spacing_mm)
    # the border emphasis is a training device only: validation scores every pixel once
    train_set = SliceSet.from_cases(train_cases, cfg.image_channels, spacing, cfg.vertebra_size_prior,
                                    cfg.boundary_weight)
    val_set = SliceSet.from_cases(val_cases, cfg.image_channels, spacing) if val_cases else None
    run = _build_run(cfg, dist_info, dev, train_set, init_state, log)

    ckpt_path = out_dir / CHECKPOINT_NAME
    state = _Progress()
    if resume:
        state = _resume(run, ckpt_path)
        rng = np.random.default_rng(cfg.seed + 104729 * state.epoch + 7919 * dist_info.rank)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 31 + state.epoch + dist_info.rank)

    batches = _BatchSource(train_set, dev)
    t_start = time.perf_counter()
    run.network.train()
    stopped_early = False
    step = state.epoch * run.per_epoch
    for epoch in range(state.epoch, cfg.epochs):
        order = _epoch_indices(train_set, rng, cfg.empty_slice_fraction)[dist_info.rank::dist_info.world]
        losses, step = _train_epoch(run, batches, order, gen, step, epoch,
                                    lambda: _elapsed(state, t_start), progress)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": run.optimizer.param_groups[0]["lr"]}
        time_up = bool(cfg.max_minutes) and _elapsed(state, t_start) > cfg.max_minutes * 60
        last_epoch = epoch + 1 == cfg.epochs or time_up
        if val_set is not None and dist_info.main and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            _record_validation(run, state, record, val_set)
        state.history.append(record)
        if dist_info.main:
            _log_and_checkpoint(run, state, record, _elapsed(state, t_start), ckpt_path)
        if time_up and epoch + 1 < cfg.epochs:
            stopped_early = True
            if dist_info.main:
                log(f"stopping after epoch {epoch + 1}: the time limit of {cfg.max_minutes} min is reached")
            break

    seconds = _elapsed(state, t_start)
    final_state = state.best_state if state.best_state is not None else \
        {k: v.detach().cpu() for k, v in run.network.state_dict().items()}
    calibration = None
    if dist_info.main and val_set is not None and cfg.calibrate and run.stage.calibrate:
        final_state, calibration = _calibrate(run, final_state, val_set)
    metrics = {"validation_dice": state.history[-1].get("val_dice") if state.history else None,
               "best_validation_dice_mean": state.best if state.best >= 0 else None}
    model_path = out_dir / "model.zip"
    if dist_info.main:
        if cfg.stage == "diffusion":
            metadata = model_metadata(cfg, run.network.config, run.diff_cfg, data_summary or {}, state.history,
                                      seconds, dev, metrics, stopped_early, train_cases, val_cases)
        else:
            metadata = stage_metadata(init_metadata, cfg, data_summary or {}, state.history, seconds, dev,
                                      metrics, stopped_early, train_cases, val_cases)
        if calibration is not None:
            metadata["calibration"] = calibration
        save_model(model_path, {k: v.detach().cpu().contiguous() for k, v in final_state.items()}, metadata)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model_path, metrics, state.history, seconds)
