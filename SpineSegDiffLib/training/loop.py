"""The training loop: patient-wise split, augmentation, partial labels, validation
Dice, resumable checkpoints, mixed precision on CUDA, DistributedDataParallel under
torchrun, and a model `.zip` at the end."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.training.augment import random_affine, random_intensity
from SpineSegDiffLib.model.devices import autocast_context, choose_device
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.evaluation.metrics import BODY_ONLY_FAR_MM
from SpineSegDiffLib.grid.geometry import GridSpec
from SpineSegDiffLib.core.labels import BY_KEY, NUM_CLASSES, STRUCTURES
from SpineSegDiffLib.model.network import with_context_channels
from SpineSegDiffLib.grid.slices import context_stack
from SpineSegDiffLib.training.data import GridCase, one_hot

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


@dataclass
class SliceSet:
    """All training slices of some cases, stacked for fast batch gathering."""

    inputs: np.ndarray  # (N, channels, H, W) float32
    labels: np.ndarray  # (N, H, W) uint8
    annotated: np.ndarray  # (N, C) bool
    body_only: np.ndarray  # (N,) bool
    has_label: np.ndarray  # (N,) bool
    weights: np.ndarray  # (N, C, H, W) uint8 loss weights, computed once (see partial_label_targets)

    @classmethod
    def from_cases(cls, cases: list[GridCase], channels: int, spacing_mm: float) -> "SliceSet":
        if not cases:
            raise InputError("no training cases: check the data folders")
        inputs = np.concatenate([context_stack(c.slices, channels) for c in cases])
        labels = np.concatenate([c.labels for c in cases])
        annotated = np.concatenate([np.repeat(c.annotated[None], len(c.slices), 0) for c in cases])
        body_only = np.concatenate([np.full(len(c.slices), c.body_only) for c in cases])
        labels, weights = partial_label_targets(labels, annotated, body_only, spacing_mm)
        weights = weights.astype(np.uint8)
        return cls(inputs, labels, annotated, body_only, labels.reshape(len(labels), -1).any(1), weights)


def partial_label_targets(labels: np.ndarray, annotated: np.ndarray, body_only: np.ndarray,
                          spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Targets and (B, C, H, W) loss weights for partially labelled slices.

    A structure a case does not annotate gets weight 0, except where the labels
    still decide it. On vertebral-body-only slices (see ``body_only``) the vertebra
    channel counts the labelled bodies, the disc spaces between them and the
    prevertebral region (both not bone), and voxels far (> 70 mm) from any body,
    beyond the reach of pedicles, laminae and spinous processes; the disc channel
    counts the disc spaces as discs and the bodies, the prevertebral region and the
    far voxels as no disc; the canal channel counts all of those as no canal.
    Returns (labels with the disc spaces set to discs, weights).
    """
    from scipy import ndimage

    from SpineSegDiffLib.data.body_only import slice_regions

    labels = labels.copy()
    b, h, w = labels.shape
    weights = np.repeat(annotated[:, :, None, None].astype(np.float32), h, 2).repeat(w, 3)
    channel = {s.key: i for i, s in enumerate(STRUCTURES)}
    for i in np.nonzero(body_only)[0]:
        body = labels[i] == BY_KEY["vertebrae"].value
        if not body.any():
            weights[i, channel["vertebrae"]] = 0.0
            continue
        far = ndimage.distance_transform_edt(~body) * spacing_mm > BODY_ONLY_FAR_MM
        gaps, front = slice_regions(body, (spacing_mm, spacing_mm))
        labels[i][gaps] = BY_KEY["discs"].value
        known = body | gaps | front | far
        for key in ("spinal_canal", "vertebrae", "discs"):
            if key == "vertebrae" or not annotated[i, channel[key]]:
                weights[i, channel[key]] = known
    return labels, weights


def _lr_lambda(total_steps: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _time_lr_factor(elapsed_s: float, budget_s: float, warmup_fraction: float) -> float:
    """Learning-rate factor under a time budget: linear warm-up over the first
    ``warmup_fraction`` of the time, then a cosine that reaches its floor when the time
    is up. (Counting warm-up in steps of the nominal epochs made it last most of a
    short run: 800 of 880 steps in a 22-minute CPU run.)"""
    progress = min(1.0, elapsed_s / budget_s)
    if progress < warmup_fraction:
        return max(0.02, progress / warmup_fraction)
    return max(0.02, 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Under torchrun (WORLD_SIZE > 1) join the process group; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


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


def validation_dice(network, slices: SliceSet, diffusion_cfg, samples: int, steps: int,
                    device: torch.device, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Dice per structure over all validation slices (pooled), annotated structures only."""
    from SpineSegDiffLib.model.diffusion import sample_ensemble

    inter = np.zeros(NUM_CLASSES)
    total = np.zeros(NUM_CLASSES)
    network.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = np.nonzero(slices.has_label)[0]
    with torch.inference_mode(), autocast_context(device):
        for start in range(0, len(idx), batch):
            sel = idx[start:start + batch]
            image = torch.from_numpy(slices.inputs[sel]).to(device)
            res = sample_ensemble(network, image, samples=samples, steps=steps,
                                  fused_steps=min(diffusion_cfg.fused_steps, steps), generator=gen,
                                  config=diffusion_cfg)
            pred = (res.probabilities.float() > 0.5).cpu().numpy()
            gt = one_hot(slices.labels[sel]) > 0.5
            ann = slices.annotated[sel][:, :, None, None]
            if slices.body_only[sel].any():  # body-only labels: score recall for vertebrae
                v = 1
                bo = slices.body_only[sel]
                pred[bo, v] &= gt[bo, v]
            inter += (pred & gt & ann).sum(axis=(0, 2, 3))
            total += ((pred & ann).sum(axis=(0, 2, 3)) + (gt & ann).sum(axis=(0, 2, 3)))
    network.train()
    return {s.key: (float(2 * inter[i] / total[i]) if total[i] > 0 else float("nan"))
            for i, s in enumerate(STRUCTURES)}


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(cases: list[GridCase], cfg: TrainConfig, out_dir: str | Path, device: str = "auto",
          resume: bool = False, progress=None, data_summary: dict | None = None,
          log: Callable[[str], None] = print, init_state: dict | None = None) -> TrainResult:
    """Train a model on `cases` (already on the model grid) and write `out_dir/model.zip`."""
    from SpineSegDiffLib.model.diffusion import DiffusionConfig, diffusion_loss
    from SpineSegDiffLib.model.modelfile import save_model
    from SpineSegDiffLib.model.network import DiffUNet, NetworkConfig
    from SpineSegDiffLib.data.spider import patient_split

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

    ckpt_path = out_dir / "checkpoint.pt"
    start_epoch, history, best, best_state, elapsed_before = 0, [], -1.0, None, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)  # tensors only, no code
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
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
            _save_checkpoint(ckpt_path, state)
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
        "labels": [{"value": s.value, "key": s.key, "name": s.name, "color": list(s.color)} for s in STRUCTURES],
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
