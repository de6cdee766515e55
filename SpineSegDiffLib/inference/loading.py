"""Loading a model file for inference: the network on its device, with the CPU's faster pooling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from SpineSegDiffLib.core.cpu_kernel import cpu_kernel
from SpineSegDiffLib.core.log import warn
from SpineSegDiffLib.grid.geometry import GridSpec
from SpineSegDiffLib.model.devices import choose_device

if TYPE_CHECKING:
    pass



@dataclass
class LoadedModel:
    network: torch.nn.Module
    metadata: dict
    grid_spec: GridSpec
    diffusion: Any  # diffusion.DiffusionConfig
    device: torch.device
    path: Path | None = None
    device_note: str | None = None
    requested_device: str = "auto"  # as given ("auto", "cpu", ...): the cached path's request
    kernel: str = "eager"  # "onnxruntime" when the CPU runs the network through it (core/cpu_kernel.py)

    @property
    def image_channels(self) -> int:
        return int(self.metadata["architecture"].get("image_channels", 1))

    @property
    def identity(self) -> dict:
        return {"id": self.metadata.get("id"), "version": self.metadata.get("version"),
                "path": str(self.path) if self.path else None}

    def default(self, key: str, fallback: int) -> int:
        return int(self.metadata.get("inference_defaults", {}).get(key, fallback))


def load_model(path: str | Path, device: str = "auto") -> LoadedModel:
    """Read a model `.zip` (never unpickles) and put the network on a device."""
    from SpineSegDiffLib.model.diffusion import DiffusionConfig
    from SpineSegDiffLib.model.modelfile import build_model, load_model_file

    dev, note = choose_device(device)
    model_file = load_model_file(path)
    network = build_model(model_file, dev)
    network.eval()
    meta = model_file.metadata
    grid = GridSpec(**meta["preprocessing"]["grid"])
    kernel = "eager"
    if dev.type == "cpu":
        use_fast_pooling(network)
        if cpu_kernel() == "onnxruntime":
            from SpineSegDiffLib.model.onnx_network import onnx_network

            channels = int(meta["architecture"].get("image_channels", 1))
            wrapped = onnx_network(network, Path(path), grid.size, channels)
            if wrapped is not None:
                network, kernel = wrapped, "onnxruntime"
    if note:
        warn(note)
    return LoadedModel(network, meta, grid, DiffusionConfig.from_dict(meta["diffusion"]), dev,
                       Path(path), note, device, kernel)


class MaxPool2x2(torch.nn.Module):
    """2x2 max-pooling as three elementwise maxima: the same values as nn.MaxPool2d(2) on
    even sizes, about 6x faster on the CPU, where PyTorch's pooling kernel also computes
    indices (it was 11 % of a denoiser call in the profile in benchmarks/README.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def use_fast_pooling(network: torch.nn.Module) -> int:
    """Swap plain 2x2 nn.MaxPool2d layers for ``MaxPool2x2`` (inference only); returns how many.

    Grid sizes are multiples of 16, so every pooled map has even height and width."""
    swapped = 0
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.MaxPool2d) and _is_plain_2x2(child):
                setattr(module, name, MaxPool2x2())
                swapped += 1
    return swapped


def _is_plain_2x2(pool: torch.nn.MaxPool2d) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (pair(pool.kernel_size) == (2, 2) and pair(pool.stride) == (2, 2) and pair(pool.padding) == (0, 0)
            and pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices)
