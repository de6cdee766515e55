"""What `segment` needs to know of a model file without loading its weights (no torch).

Defaults, grid, diffusion settings and identity come from ``model.json``; the cached
path of `segment` (``cached_run.py``) runs on this alone. It answers the same questions
as ``loading.LoadedModel`` (``metadata``, ``default``, ``identity``, ``grid_spec``,
``diffusion``, ``image_channels``), so the start and default helpers take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from SpineSegDiffLib.grid.geometry import GridSpec
from SpineSegDiffLib.model.diffusion_config import DiffusionConfig


@dataclass
class ModelInfo:
    metadata: dict
    path: Path

    @classmethod
    def read(cls, path: str | Path) -> "ModelInfo":
        """``model.json`` of a model file (checked, as when the model is loaded)."""
        from SpineSegDiffLib.model.metadata import read_metadata

        return cls(read_metadata(path), Path(path))

    @property
    def grid_spec(self) -> GridSpec:
        return GridSpec(**self.metadata["preprocessing"]["grid"])

    @property
    def diffusion(self) -> DiffusionConfig:
        return DiffusionConfig.from_dict(self.metadata["diffusion"])

    @property
    def image_channels(self) -> int:
        return int(self.metadata["architecture"].get("image_channels", 1))

    @property
    def identity(self) -> dict:
        return {"id": self.metadata.get("id"), "version": self.metadata.get("version"), "path": str(self.path)}

    def default(self, key: str, fallback: int) -> int:
        return int(self.metadata.get("inference_defaults", {}).get(key, fallback))
