"""The Diff-UNet style conditional denoiser (2D, sagittal slices).

Two parts:

* an image encoder (BasicUNet encoder: ``conv_0`` + 4 down blocks) that turns an MRI
  slice into five feature maps. It does not depend on the diffusion time, so it runs
  ONCE per slice and its features are reused for every sample and every step;
* a denoising U-Net that takes ``cat([image, x_t])`` and the diffusion time. The image
  encoder's five feature maps are *added* to its own encoder outputs at the matching
  scales; the time embedding is added inside every conv block. It predicts the clean
  mask x0 as logits (3 sigmoid channels: canal, vertebrae, discs).

Batching of samples: ``denoise`` takes the image and features of B slices and an
``x_t`` of batch ``S * B`` ordered sample-major (row ``s * B + b`` is sample ``s`` of
slice ``b``). The features are broadcast onto the S samples without copying them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.basic_unet import Down, TwoConv

from SpineSegDiffLib.core.errors import InputError, ModelError
from SpineSegDiffLib.core.settings_dict import settings_from_dict

PAPER_FEATURES: tuple[int, ...] = (64, 64, 128, 256, 512, 64)
SMALL_FEATURES: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
TINY_FEATURES: tuple[int, ...] = (8, 8, 16, 16, 32, 8)

# H and W must survive four 2x max-poolings exactly, so skips line up without padding.
SIZE_MULTIPLE = 16

_NORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "instance": ("instance", {"affine": True}),
    "batch": ("batch", {}),
    "group": ("group", {"num_groups": 4}),
}
_ACTS: dict[str, tuple[str, dict[str, Any]]] = {
    "leakyrelu": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    "relu": ("ReLU", {"inplace": True}),
    "silu": ("SiLU", {}),
}


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture settings; stored in a model file's ``model.json``."""

    image_channels: int = 1  # 1, or 3 for 2.5D (the slice and its two sagittal neighbours)
    num_classes: int = 3
    features: tuple[int, ...] = PAPER_FEATURES  # 5 encoder levels + final decoder level
    time_embed_dim: int = 128
    norm: str = "instance"
    act: str = "leakyrelu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        problems = []
        if len(self.features) != 6 or min(self.features) < 1:
            problems.append(f"features must be 6 positive integers, got {list(self.features)}")
        if self.image_channels < 1 or self.num_classes < 1:
            problems.append("image_channels and num_classes must be at least 1")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            problems.append(f"time_embed_dim must be an even number >= 2, got {self.time_embed_dim}")
        if self.norm not in _NORMS:
            problems.append(f"unknown norm {self.norm!r} (known: {', '.join(_NORMS)})")
        if self.act not in _ACTS:
            problems.append(f"unknown act {self.act!r} (known: {', '.join(_ACTS)})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ModelError("network settings: " + "; ".join(problems)
                             + "; use a model file made by this version of SpineSegDiff")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(self.features)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model.json") -> "NetworkConfig":
        """Read settings written by ``to_dict``; ``source`` names the file in errors."""
        return settings_from_dict(cls, data, source, "network")


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim), as in the transformer / DDPM papers."""
    half = dim // 2
    exponents = torch.arange(half, device=timesteps.device, dtype=torch.float32) / half
    frequencies = torch.exp(-math.log(10000.0) * exponents)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeTwoConv(nn.Module):
    """Two conv blocks; the projected time embedding is added between them."""

    def __init__(self, in_chns: int, out_chns: int, temb_dim: int, act, norm, dropout: float):
        super().__init__()
        self.conv_0 = Convolution(2, in_chns, out_chns, act=act, norm=norm, dropout=dropout, padding=1)
        self.conv_1 = Convolution(2, out_chns, out_chns, act=act, norm=norm, dropout=dropout, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_chns)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.conv_0(x)
        # temb has batch 1 (one t for all) or N: broadcasting covers both
        x = x + self.temb_proj(temb)[:, :, None, None].to(x.dtype)
        return self.conv_1(x)


class TimeDown(nn.Module):
    """2x max-pooling, then a time-conditioned double conv."""

    def __init__(self, in_chns: int, out_chns: int, temb_dim: int, act, norm, dropout: float):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.convs = TimeTwoConv(in_chns, out_chns, temb_dim, act, norm, dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.convs(self.pool(x), temb)


class TimeUpCat(nn.Module):
    """Transposed-conv upsampling, concatenation with the skip, time-conditioned double conv."""

    def __init__(self, in_chns: int, cat_chns: int, out_chns: int, temb_dim: int, act, norm,
                 dropout: float, halves: bool = True):
        super().__init__()
        up_chns = in_chns // 2 if halves else in_chns
        self.upsample = UpSample(2, in_chns, up_chns, 2, mode="deconv")
        self.convs = TimeTwoConv(cat_chns + up_chns, out_chns, temb_dim, act, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.upsample(x)], dim=1), temb)


class ImageEncoder(nn.Module):
    """BasicUNet encoder: five feature maps at full, 1/2, 1/4, 1/8 and 1/16 resolution."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        f, act, norm = config.features, _ACTS[config.act], _NORMS[config.norm]
        self.conv_0 = TwoConv(2, config.image_channels, f[0], act, norm, True, config.dropout)
        self.downs = nn.ModuleList(
            Down(2, f[i], f[i + 1], act, norm, True, config.dropout) for i in range(4))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.conv_0(image)]
        for down in self.downs:
            maps.append(down(maps[-1]))
        return maps


def _add_features(h: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """h (S*B, C, H, W) + feature (B, C, H, W), broadcast over S without copying feature."""
    if feature.shape[0] == h.shape[0]:
        return h + feature
    repeats = h.shape[0] // feature.shape[0]
    summed = h.reshape(repeats, feature.shape[0], *h.shape[1:]) + feature.unsqueeze(0)
    return summed.reshape(h.shape)


class DiffUNet(nn.Module):
    """Conditional denoiser: image encoder + time-conditioned U-Net predicting x0 logits."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        f, act, norm, drop = config.features, _ACTS[config.act], _NORMS[config.norm], config.dropout
        temb_dim = 4 * config.time_embed_dim
        self.image_encoder = ImageEncoder(config)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_embed_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        # the blocks' projections see SiLU(temb), as in DDPM-style U-Nets
        self.temb_act = nn.SiLU()
        self.conv_0 = TimeTwoConv(config.image_channels + config.num_classes, f[0], temb_dim, act, norm, drop)
        self.downs = nn.ModuleList(TimeDown(f[i], f[i + 1], temb_dim, act, norm, drop) for i in range(4))
        self.upcat_4 = TimeUpCat(f[4], f[3], f[3], temb_dim, act, norm, drop)
        self.upcat_3 = TimeUpCat(f[3], f[2], f[2], temb_dim, act, norm, drop)
        self.upcat_2 = TimeUpCat(f[2], f[1], f[1], temb_dim, act, norm, drop)
        self.upcat_1 = TimeUpCat(f[1], f[0], f[5], temb_dim, act, norm, drop, halves=False)
        self.final_conv = nn.Conv2d(f[5], config.num_classes, kernel_size=1)
        # per-structure affine logit calibration (Platt scaling), fitted after training on
        # held-out data (calibration.py); identity until then
        self.register_buffer("logit_scale", torch.ones(config.num_classes))
        self.register_buffer("logit_bias", torch.zeros(config.num_classes))

    def _check_image(self, image: torch.Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.config.image_channels:
            raise InputError(f"network input: expected slices (B, {self.config.image_channels}, H, W), "
                             f"got {tuple(image.shape)}; use the image channels the model was trained with")
        height, width = image.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise InputError(f"network input: slices are {height}x{width} pixels; height and width "
                             f"must be multiples of {SIZE_MULTIPLE}; choose such a model grid size")

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Image features (five maps), computed once per slice and reused for all steps."""
        self._check_image(image)
        return self.image_encoder(image)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor | int, image: torch.Tensor,
                features: Sequence[torch.Tensor]) -> torch.Tensor:
        """x0 logits (N, num_classes, H, W) for noisy masks ``x_t`` (N, num_classes, H, W).

        ``features`` have batch B with N = S * B (sample-major rows) and are broadcast,
        not copied; ``image`` has batch B or N;
        ``t`` is one timestep for all (int or 0-d/1-element tensor) or one per row (N,).
        """
        n, batch = x_t.shape[0], features[0].shape[0]
        if n % batch or image.shape[0] not in (batch, n) or any(f.shape[0] != batch for f in features):
            raise ValueError(f"x_t batch {n} must be a multiple of the feature batch {batch}, "
                             f"and the image batch ({image.shape[0]}) one of the two")
        if image.shape[0] != n:
            # the image is small (1-3 channels): one copy per call is cheap; callers
            # looping over steps can pass it already repeated
            image = image.repeat(n // batch, 1, 1, 1)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        temb = self.temb_act(self.time_mlp(timestep_embedding(t, self.config.time_embed_dim)))

        h = _add_features(self.conv_0(torch.cat([image, x_t.to(image.dtype)], dim=1), temb), features[0])
        skips = [h]
        for level, down in enumerate(self.downs, start=1):
            h = _add_features(down(h, temb), features[level])
            skips.append(h)
        u = self.upcat_4(skips[4], skips[3], temb)
        u = self.upcat_3(u, skips[2], temb)
        u = self.upcat_2(u, skips[1], temb)
        u = self.upcat_1(u, skips[0], temb)
        logits = self.final_conv(u)
        return logits * self.logit_scale.view(1, -1, 1, 1) + self.logit_bias.view(1, -1, 1, 1)

    def forward(self, image: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.denoise(x_t, t, image, self.encode(image))


_IMAGE_INPUT_WEIGHTS = ("image_encoder.conv_0.conv_0.conv.weight", "conv_0.conv_0.conv.weight")


def with_context_channels(state: dict[str, torch.Tensor], new_channels: int) -> dict[str, torch.Tensor]:
    """Weights of a network (state dict) for ``new_channels`` image channels.

    Fine-tuning a 2D model as 2.5D: the two layers that read the image (the encoder's
    first convolution and the denoiser's, which reads [image, x_t]) get the old image
    weights on the centre slice and zeros on the neighbours, so the new network starts
    out computing exactly what the old one did and training can learn to use the
    neighbours. Only from 1 channel, or to the same count; weights that lack these
    layers are returned as they are (loading them reports the misfit).
    """
    if _IMAGE_INPUT_WEIGHTS[0] not in state:
        return dict(state)
    old_channels = int(state[_IMAGE_INPUT_WEIGHTS[0]].shape[1])
    if new_channels == old_channels:
        return dict(state)
    if old_channels != 1 or new_channels % 2 == 0:
        raise InputError(f"can only widen a 1-channel model to an odd number of image channels, "
                         f"not {old_channels} -> {new_channels}")
    out = dict(state)
    centre = new_channels // 2
    for key in _IMAGE_INPUT_WEIGHTS:
        w = state[key]
        wide = torch.zeros((w.shape[0], w.shape[1] + new_channels - 1, *w.shape[2:]), dtype=w.dtype)
        wide[:, centre] = w[:, 0]  # image channel(s) come first in both layers
        wide[:, new_channels:] = w[:, 1:]
        out[key] = wide
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def estimate_size_mb(model: nn.Module) -> float:
    """Size of the weights and buffers in MB (10^6 bytes), at their current dtype."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6
