"""Settings dataclasses read back from a model file's JSON: one rule, one set of messages."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from SpineSegDiffLib.core.errors import ModelError

T = TypeVar("T")


def settings_from_dict(cls: type[T], data: Any, source: str, what: str) -> T:
    """``cls(**data)`` for a dataclass written by its ``to_dict``; ModelError naming ``source`` otherwise.

    ``what`` names the settings in messages ("network", "diffusion"). Keys this version does
    not know mean a newer SpineSegDiff made the file; a ModelError raised by the dataclass's
    own checks keeps its text, prefixed with ``source``.
    """
    if not isinstance(data, dict):
        raise ModelError(f"{source}: the {what} settings are not a JSON object; "
                         "the model file is damaged, download or export it again")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ModelError(f"{source}: unknown {what} settings {unknown}; the model was made "
                         "by a newer SpineSegDiff, update the extension")
    try:
        return cls(**data)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{source}: invalid {what} settings ({exc}); the model file is "
                         "damaged, download or export it again") from None
