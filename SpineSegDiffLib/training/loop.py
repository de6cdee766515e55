"""The training loop: patient-wise split, augmentation, partial labels, validation
Dice, resumable checkpoints, mixed precision on CUDA, DistributedDataParallel under
torchrun, and a model `.zip` at the end."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from SpineSegDiffLib.core.labels import NUM_CLASSES
from SpineSegDiffLib.model.devices import autocast_context, choose_device
from SpineSegDiffLib.training.augment import random_affine, random_intensity
from SpineSegDiffLib.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore, save_checkpoint
from SpineSegDiffLib.training.config import TrainConfig
from SpineSegDiffLib.training.data import GridCase, one_hot
from SpineSegDiffLib.training.distributed import init_distributed
from SpineSegDiffLib.training.model_record import _load_initial_weights, model_metadata
from SpineSegDiffLib.training.schedule import _lr_lambda, _time_lr_factor
from SpineSegDiffLib.training.targets import SliceSet
from SpineSegDiffLib.training.validation import validation_dice


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
        else:
            self.slices = slices

    def get(self, sel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.on_device:
            idx = torch.from_numpy(np.asarray(sel)).to(self.device)
            return self.inputs[idx], self.masks[idx].float(), self.weights[idx].float()
        s = self.slices
        return (torch.from_numpy(s.inputs[sel]), torch.from_numpy(one_hot(s.labels[sel])),
                torch.from_numpy(s.weights[sel]).float())


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


def train(cases: list[GridCase], cfg: TrainConfig, out_dir: str | Path, device: str = "auto",
          resume: bool = False, progress=None, data_summary: dict | None = None,
          log: Callable[[str], None] = print, init_state: dict | None = None) -> TrainResult:
    """Train a model on `cases` (already on the model grid) and write `out_dir/model.zip`.

    A run that fails leaves no empty output folder behind (one it did not find)."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        return _train(cases, cfg, out_dir, device, resume, progress, data_summary, log, init_state)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _train(cases: list[GridCase], cfg: TrainConfig, out_dir: Path, device: str, resume: bool,
           progress, data_summary: dict | None, log: Callable[[str], None],
           init_state: dict | None) -> TrainResult:
    from SpineSegDiffLib.data.spider import patient_split
    from SpineSegDiffLib.model.diffusion import DiffusionConfig, diffusion_loss
    from SpineSegDiffLib.model.modelfile import save_model
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig

    dist_info = init_distributed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist_info.world > 1 and torch.cuda.is_available():
        dev, note = torch.device("cuda", dist_info.local_rank), None
    else:
        dev, note = choose_device(device)
    if note and dist_info.main:
        log(f"note: {note}")
    torch.manual_seed(cfg.seed + dist_info.rank)
    rng = np.random.default_rng(cfg.seed + 7919 * dist_info.rank)

    train_cases, val_cases = patient_split(cases, cfg.val_fraction, cfg.seed)
    spacing = float(cfg.grid_spacing_mm)
    train_set = SliceSet.from_cases(train_cases, cfg.image_channels, spacing)
    val_set = SliceSet.from_cases(val_cases, cfg.image_channels, spacing) if val_cases else None

    net_cfg = NetworkConfig(image_channels=cfg.image_channels, num_classes=NUM_CLASSES,
                            features=cfg.feature_widths())
    diff_cfg = DiffusionConfig(sampling_steps=cfg.default_steps, fused_steps=cfg.fused_steps)
    network = DiffUNet(net_cfg)
    if init_state is not None:  # fine-tuning: start from these weights, calibration reset
        _load_initial_weights(network, init_state, cfg.image_channels)
    network = network.to(dev)
    model_for_loss = network
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model_for_loss = DDP(network, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = max(1, math.ceil(len(_epoch_indices(train_set, np.random.default_rng(0), cfg.empty_slice_fraction))
                                 / (cfg.batch_size * dist_info.world)))
    total_steps = per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(total_steps * cfg.warmup_fraction)))

    ckpt_path = out_dir / CHECKPOINT_NAME
    start_epoch, history, best, best_state, elapsed_before = 0, [], -1.0, None, 0.0
    state = load_checkpoint(ckpt_path, dev) if resume else None
    if state is not None:
        restore(ckpt_path, state, network, optimizer, scheduler)
        start_epoch = int(state["epoch"])
        history = json.loads(state["history_json"])
        best = float(state["best"])
        best_state = state.get("best_model")
        elapsed_before = float(state.get("elapsed", 0.0))
        rng = np.random.default_rng(cfg.seed + 104729 * start_epoch + 7919 * dist_info.rank)
        if dist_info.main:
            log(f"resumed from {ckpt_path} at epoch {start_epoch}")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 31 + start_epoch + dist_info.rank)

    batches = _BatchSource(train_set, dev)
    t_start = time.perf_counter()
    network.train()
    stopped_early = False
    step = start_epoch * per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        order = _epoch_indices(train_set, rng, cfg.empty_slice_fraction)
        order = order[dist_info.rank::dist_info.world]
        losses = []
        for b in range(per_epoch):
            sel = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if len(sel) == 0:
                sel = order[: cfg.batch_size]
            image, mask, weights = batches.get(sel)
            if cfg.augment:
                image, mask, weights = random_affine(image, mask, weights, gen)
                image = random_intensity(image, gen)
            with autocast_context(dev):
                loss = diffusion_loss(model_for_loss, image, mask, channel_weight=weights,
                                      generator=gen, config=diff_cfg)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if cfg.max_minutes:  # a time budget: the cosine follows elapsed time, not epochs
                factor = _time_lr_factor(elapsed_before + time.perf_counter() - t_start,
                                         cfg.max_minutes * 60, cfg.warmup_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
            losses.append(float(loss.detach()))
            if progress and dist_info.main:
                progress("train", step / total_steps, f"epoch {epoch + 1}/{cfg.epochs}", loss=losses[-1])
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"]}
        time_up = bool(cfg.max_minutes) and (elapsed_before + time.perf_counter() - t_start) > cfg.max_minutes * 60
        last_epoch = epoch + 1 == cfg.epochs or time_up
        if val_set is not None and dist_info.main and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            dice = validation_dice(network, val_set, diff_cfg, cfg.val_samples, cfg.val_steps, dev,
                                   seed=cfg.seed)
            record["val_dice"] = dice
            mean = float(np.nanmean(list(dice.values()))) if any(not math.isnan(v) for v in dice.values()) else -1.0
            record["val_dice_mean"] = mean
            if mean >= best:
                best = mean
                best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        history.append(record)
        elapsed = elapsed_before + time.perf_counter() - t_start
        if dist_info.main:
            msg = f"epoch {epoch + 1}/{cfg.epochs} loss {record['loss']:.4f}"
            if "val_dice" in record:
                msg += " val Dice " + " ".join(f"{k} {v:.3f}" for k, v in record["val_dice"].items())
            log(msg)
            state = {"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                     "history_json": json.dumps(history), "elapsed": elapsed}
            if best_state is not None:
                state["best_model"] = best_state
            save_checkpoint(ckpt_path, state)
        if time_up and epoch + 1 < cfg.epochs:
            stopped_early = True
            if dist_info.main:
                log(f"stopping after epoch {epoch + 1}: the time limit of {cfg.max_minutes} min is reached")
            break

    seconds = elapsed_before + time.perf_counter() - t_start
    final_state = best_state if best_state is not None else {k: v.detach().cpu() for k, v in network.state_dict().items()}
    calibration = None
    if dist_info.main and val_set is not None and cfg.calibrate:
        from SpineSegDiffLib.model.calibration import calibrate

        network.load_state_dict(final_state)
        calibration = calibrate(network, val_set.inputs, one_hot(val_set.labels), val_set.weights,
                                diff_cfg, dev, cfg.default_steps, cfg.fused_steps)
        final_state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        log("calibrated logits on the validation slices: BCE "
            + " ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(calibration["bce_before"], calibration["bce_after"])))
    metrics = {"validation_dice": history[-1].get("val_dice") if history else None,
               "best_validation_dice_mean": best if best >= 0 else None}
    model_path = out_dir / "model.zip"
    if dist_info.main:
        metadata = model_metadata(cfg, net_cfg, diff_cfg, data_summary or {}, history, seconds, dev,
                                  metrics, stopped_early, train_cases, val_cases)
        if calibration is not None:
            metadata["calibration"] = calibration
        save_model(model_path, {k: v.detach().cpu().contiguous() for k, v in final_state.items()}, metadata)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(model_path, metrics, history, seconds)
