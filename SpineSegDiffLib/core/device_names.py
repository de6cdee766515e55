"""The device names every entry point accepts (torch-free, so parsers and Slicer can use them)."""

from __future__ import annotations

# "gpu" is an alias of "cuda", kept because users type it
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "gpu", "mps", "cpu")
# One name per device (no aliases): what a menu offers, e.g. the Slicer panel.
DEVICE_NAMES: tuple[str, ...] = tuple(name for name in DEVICE_CHOICES if name != "gpu")


def canonical_device(name: str | None) -> str:
    """'gpu' -> 'cuda', None -> 'auto', anything else lower-cased (checked by the caller)."""
    name = (name or "auto").lower()
    return "cuda" if name == "gpu" else name
