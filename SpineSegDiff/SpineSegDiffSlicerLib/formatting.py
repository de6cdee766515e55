"""Texts the panel shows: durations and one line per engine progress record (pure Python)."""

from __future__ import annotations

# The engine's progress stages (see `spinesegdiff segment --progress json`) as the panel names them.
STAGE_NAMES = {"load": "Loading", "grid": "Preparing slices", "encode": "Encoding the image",
               "sample": "Sampling", "fuse": "Fusing samples", "write": "Writing results",
               "done": "Importing results"}


def format_duration(seconds: float | None) -> str:
    """'1 min 5 s', '42 s', or 'unknown time' for None."""
    if seconds is None:
        return "unknown time"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def describe_progress(record: dict) -> str:
    """'Sampling (sample 2, step 7) - about 1 min 5 s left' from one progress line."""
    text = STAGE_NAMES.get(record.get("stage"), str(record.get("stage", "Working")))
    detail = [f"{key} {record[key]}" for key in ("sample", "step") if record.get(key) is not None]
    if detail:
        text += f" ({', '.join(detail)})"
    if record.get("seconds_left") is not None:
        text += f" - about {format_duration(record['seconds_left'])} left"
    return text


def review_cells(row) -> tuple[tuple[str, str, str], str]:
    """The review table's cells for one ReviewRow (name, volume ml, mean uncertainty) and their tooltip."""
    tip = "Click to jump to where this structure is most uncertain" if row.peak_ras else "Not found in this volume"
    return (row.name, f"{row.volume_ml:.1f}", f"{row.mean_uncertainty:.3f}"), tip
