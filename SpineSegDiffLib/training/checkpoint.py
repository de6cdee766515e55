"""The training checkpoint (``OUT/checkpoint.pt``): written atomically, read back with checks.

A resumed run must either continue exactly where the last one stopped or say why it
cannot: a truncated or foreign checkpoint is one error line, never a torch traceback,
and ``--resume`` without a checkpoint says that it starts afresh.
"""

from __future__ import annotations

from pathlib import Path

import torch

from SpineSegDiffLib.core.atomic import atomic_path
from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.log import warn

CHECKPOINT_NAME = "checkpoint.pt"
_KEYS = ("model", "optimizer", "scheduler", "epoch", "history_json", "best")


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The checkpoint's state to resume from, or None (with a warning) if there is none."""
    if not path.exists():
        warn(f"--resume: no checkpoint at {path}; starting a new training from epoch 1")
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)  # tensors only, no code
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: cannot resume from this checkpoint ({first}); it is truncated or "
                         "damaged: restore it, or delete it and run without --resume to start afresh") from None
    missing = [k for k in _KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(f"{path}: not a SpineSegDiff training checkpoint (lacks {', '.join(missing)}); "
                         "delete it and run without --resume to start afresh")
    return state


def restore(path: Path, state: dict, network, optimizer, scheduler) -> None:
    """Load ``state`` into the training objects; a checkpoint of another network is one error line."""
    try:
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: the checkpoint does not fit this training's settings ({first}); "
                         "resume with the settings it was made with, or use another --out") from None
