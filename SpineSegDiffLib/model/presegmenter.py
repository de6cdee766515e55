"""The presegmenter: a deterministic head on the denoiser's image encoder.

The paper (SpineSegDiff) starts sampling from a deterministic segmenter's mask noised to
a step t_max, not from pure noise. Here that segmenter is a light U-Net decoder (MONAI's
``UnetUpBlock``, the block of nnU-Net's DynUNet) on the five feature maps the image
encoder already computes once per slice: one encoder pass plus this head is the
presegmentation, and the same features then serve every denoiser call.

Its weights live in the model file under the prefix ``presegmenter.``; ``model.json``
records ``presegmentation`` (``PresegmentationConfig``). Model files without it load and
run as before (noise start).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetUpBlock

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.settings_dict import settings_from_dict

WEIGHT_PREFIX = "presegmenter."
KINDS = ("encoder-head",)
STARTS = ("noise", "presegmentation")


@dataclass(frozen=True)
class PresegmentationConfig:
    """What ``model.json``'s ``presegmentation`` records."""

    kind: str = "encoder-head"
    t_max: int = 400  # forward-process step (of T) the presegmentation is noised to
    steps: int = 5  # K DDIM steps from t_max down
    default_start: str = "presegmentation"  # the start ``segment`` uses unless told

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.t_max < 1 or self.steps < 1 or self.steps > self.t_max + 1:
            problems.append(f"need 1 <= steps <= t_max + 1, got t_max {self.t_max}, steps {self.steps}")
        if self.default_start not in STARTS:
            problems.append(f"default_start must be one of {', '.join(STARTS)}")
        if problems:
            raise ModelError("presegmentation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "model.json") -> "PresegmentationConfig":
        return settings_from_dict(cls, data, source, "presegmentation")


class PresegmentationHead(nn.Module):
    """Decoder: encoder maps (f0..f4 channels, full .. 1/16 resolution) -> class logits."""

    def __init__(self, features: Sequence[int], num_classes: int, norm: str = "instance"):
        super().__init__()
        f = list(features)[:5]
        norm_name = (norm, {"affine": True}) if norm == "instance" else norm
        self.ups = nn.ModuleList(
            UnetUpBlock(2, f[level], f[level - 1], kernel_size=3, stride=2, upsample_kernel_size=2,
                        norm_name=norm_name)
            for level in range(4, 0, -1))
        self.out = UnetOutBlock(2, f[0], num_classes)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        h = maps[4]
        for up, skip in zip(self.ups, (maps[3], maps[2], maps[1], maps[0])):
            h = up(h, skip)
        return self.out(h)


def attach_presegmenter(network: nn.Module) -> PresegmentationHead:
    """Add a fresh head (as ``network.presegmenter``) fitting the network's encoder."""
    cfg = network.config
    head = PresegmentationHead(cfg.features, cfg.num_classes, cfg.norm)
    network.presegmenter = head
    return head


def has_presegmenter(network: nn.Module) -> bool:
    return isinstance(getattr(network, "presegmenter", None), nn.Module)


def presegment_logits(network: nn.Module, features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Presegmentation logits (B, C, H, W) from the image encoder's features."""
    if not has_presegmenter(network):
        raise ModelError("this model has no presegmenter; use --start noise, or add one with "
                         "`spinesegdiff train --stage presegmenter --init MODEL`")
    return network.presegmenter(features)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(denoiser weights, presegmenter weights) of a full state dict."""
    head = {k: v for k, v in state.items() if k.startswith(WEIGHT_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(WEIGHT_PREFIX)}, head
