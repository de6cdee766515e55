"""Which cached ensemble a `segment` request maps to, decided without torch.

The ensemble key (``sample_cache_key.py``) holds what only torch can tell: the device a
run ends up on ("auto" -> cuda or cpu), its precision and its sample group. So after a
run, its ensemble folder records the *request* that led there (input voxels and
geometry, model file, steps, seed, start, batching options, the device as asked, and a
fingerprint of the GPUs this process could see). Lowering S sends the same request: it
finds the folder from that record alone and re-fuses the samples with numpy, never
importing torch or MONAI (seconds of a process start the sample slider must not pay).

If the GPUs change (a driver loads, CUDA_VISIBLE_DEVICES differs), the fingerprint
changes and the request misses: the normal path then runs and finds the samples by the
ensemble key as before.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.atomic import write_text
from SpineSegDiffLib.core.hashing import sha256_file

if TYPE_CHECKING:
    from SpineSegDiffLib.inference.presegmentation import SamplingStart
    from SpineSegDiffLib.inference.sample_cache import SampleCache
    from SpineSegDiffLib.inference.settings import SegmentSettings

_PREFIX = "request_"


def device_fingerprint(requested: str) -> dict:
    """What decides where "auto" (or "cuda") runs and which CPU kernel, seen without importing torch."""
    from SpineSegDiffLib.core.cpu_kernel import cpu_kernel

    kernel = {"cpu_kernel": cpu_kernel()} if cpu_kernel() != "eager" else {}  # eager: keys as before
    return kernel | {"requested": requested, "platform": sys.platform, "machine": platform.machine(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nvidia_devices": sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")) if Path("/dev").is_dir()
            else []}


_MODEL_SHA256: dict[tuple, str] = {}


def _model_sha256(path: Path) -> str:
    """``sha256_file``, remembered per file state: Slicer's process asks at every slider step."""
    stat = Path(path).stat()
    state = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if state not in _MODEL_SHA256:
        _MODEL_SHA256[state] = sha256_file(path)
    return _MODEL_SHA256[state]


def request_key(image: sitk.Image, model_path: Path, settings: "SegmentSettings", fused_steps: int,
                start: "SamplingStart", requested_device: str) -> str:
    """SHA-256 (32 hex digits) of everything a request's samples depend on, S excepted."""
    from SpineSegDiffLib.inference.sample_cache import ensemble_key

    parts = {"request": 1, "spinesegdiff_version": __version__,  # the grid code decides the slices
             "model_sha256": _model_sha256(model_path), "steps": settings.steps, "fused_steps": fused_steps,
             "seed": settings.seed, "start": start.kind, "t_max": start.t_max,
             "batch_slices": settings.batch_slices, "samples_per_call": settings.samples_per_call,
             # only when cropping: uncropped requests keep the keys of earlier versions
             **({"crop": settings.crop, "crop_margin_mm": settings.crop_margin_mm} if settings.crop != "off"
                else {}),
             "device": device_fingerprint(requested_device),
             "geometry": [image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection()]}
    return ensemble_key(parts, [sitk.GetArrayViewFromImage(image)])


def remember_request(cache: "SampleCache", image: sitk.Image, model_path: Path | None,
                     settings: "SegmentSettings", fused_steps: int, start: "SamplingStart",
                     device_used: str, requested_device: str = "auto", crop: dict | None = None) -> None:
    """Record in the ensemble's folder that this request leads there, and the run's ``crop``
    record for the summary of a later torch-free run (never fatal)."""
    remember_request_in(cache.folder, image, model_path, settings, fused_steps, start, device_used,
                        requested_device, crop)


def remember_request_in(folder: Path, image: sitk.Image, model_path: Path | None, settings: "SegmentSettings",
                        fused_steps: int, start: "SamplingStart", device_used: str,
                        requested_device: str = "auto", crop: dict | None = None) -> None:
    """``remember_request`` for an ensemble folder (Slicer's process records its own key of a request
    the engine process served: the same voxels, a geometry read back from a file may differ in the last bits)."""
    if model_path is None or not Path(model_path).is_file() or not Path(folder).is_dir():
        return
    key = request_key(image, Path(model_path), settings, fused_steps, start, requested_device)
    path = Path(folder) / f"{_PREFIX}{key}.json"
    if path.exists():
        return
    try:
        write_text(path, json.dumps({"device": device_used, "requested_device": requested_device,
                                     "crop": crop}) + "\n")
    except OSError:  # a full or read-only cache folder costs only the fast path
        pass


def find_request(root: Path, key: str) -> tuple[Path, dict] | None:
    """(ensemble folder, its record) of a remembered request under ``root``, else None."""
    try:
        hits = list(Path(root).glob(f"*/{_PREFIX}{key}.json"))
    except OSError:
        return None
    for path in hits:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("device"), str):
            return path.parent, record
    return None
