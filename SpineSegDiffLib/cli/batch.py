"""Batch sharding for `spinesegdiff segment FOLDER --part I/N` (as nnU-Net's -part_id/-num_parts).

Part I of N takes every N-th case of the sorted case list, starting at case I - 1: a
deterministic share that depends only on the folder's file names, so N jobs of a cluster
array (or one process per GPU) split a cohort with no overlap and together cover all of it.
Each part resumes: a case whose summary (written last) exists is skipped.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

from SpineSegDiffLib.core.errors import InputError

T = TypeVar("T")
_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_part(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); parts are numbered from 1, like SLURM_ARRAY_TASK_ID=1..N."""
    match = _PART.match(text or "")
    if not match:
        raise InputError(f"--part {text!r}: give I/N with whole numbers, e.g. --part 1/4 (part 1 of 4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"--part {text}: I must be between 1 and N (N >= 1), e.g. --part 1/{max(count, 1)}")
    return index, count


def select_part(cases: Sequence[T], index: int, count: int) -> list[T]:
    """The cases of part ``index`` of ``count`` (round robin over the given order)."""
    return list(cases[index - 1::count])


def add_batch_arguments(p) -> None:
    p.add_argument("--part", metavar="I/N",
                   help="batch mode: process only part I of N of the sorted images (every N-th, from the I-th), "
                        "for cluster job arrays or one process per GPU; parts never overlap and together "
                        "cover every image")


def select_cases(cases: Sequence[T], part: str | None) -> list[T]:
    """All cases, or the share of ``--part I/N``."""
    if part is None:
        return list(cases)
    index, count = parse_part(part)
    return select_part(cases, index, count)
