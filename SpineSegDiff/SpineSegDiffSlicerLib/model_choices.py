"""The models the panel offers and the defaults each one brings (torch-free).

Reads the registry and each model file's ``model.json`` through the engine's torch-free
modules, so choosing a model in Slicer's GUI process never imports torch or MONAI.
"""

from __future__ import annotations

import logging
from pathlib import Path

from SpineSegDiffLib.core.errors import SpineSegDiffError

# Used until a model's own defaults (model.json inference_defaults) are known.
FALLBACK_SAMPLES = 10
FALLBACK_STEPS = 10


def available_models() -> list[tuple[str, str]]:
    """(model id, title) of every registered model: bundled first, then the user's."""
    from SpineSegDiffLib.model import registry

    seen, models = set(), []
    for entry in reversed(registry.all_models()):  # a later (user) entry wins for its id
        if entry.id not in seen:
            seen.add(entry.id)
            models.append((entry.id, f"{entry.title} ({entry.version})"))
    return list(reversed(models))


def add_model_from_file(path: str | Path) -> str:
    """Check and copy a model .zip into the user's model cache; returns its id."""
    from SpineSegDiffLib.model import registry

    return registry.add_user_model(path).id


def local_model_file(model_id: str) -> Path | None:
    """The model's file when it is on this computer (a path, or a local registry entry).

    A remote model is downloaded by the engine on first use, not on the GUI thread: None.
    """
    from SpineSegDiffLib.model import registry

    path = Path(model_id)
    if path.is_file():
        return path
    entry = next((e for e in reversed(registry.all_models()) if e.id == model_id), None)
    if entry is None or entry.is_remote:
        return None
    return registry.resolve_model(entry)


def model_defaults(model_id: str) -> tuple[int, int]:
    """(samples, steps) from the model's ``model.json``; the fallback, with a log line saying why, otherwise."""
    from SpineSegDiffLib.model.metadata import read_metadata

    try:
        path = local_model_file(model_id)
        if path is None:
            logging.info(f"SpineSegDiff: model '{model_id}' is not on this computer yet; "
                         f"using {FALLBACK_SAMPLES} samples and {FALLBACK_STEPS} steps until it is")
            return FALLBACK_SAMPLES, FALLBACK_STEPS
        found = read_metadata(path)["inference_defaults"]  # validated: positive integers
    except SpineSegDiffError as exc:  # the engine reports the same problem when it runs
        logging.warning(f"SpineSegDiff: cannot read the defaults of model '{model_id}': {exc}; "
                        f"using {FALLBACK_SAMPLES} samples and {FALLBACK_STEPS} steps")
        return FALLBACK_SAMPLES, FALLBACK_STEPS
    return found["samples"], found["steps"]
