#!/usr/bin/env python
"""Seconds per phantom case, today's generator against the old one (commit 13380df), in one run.

    .venv/bin/python benchmarks/phantom_speed.py --cases 3

Absolute times depend on what else the machine runs; the ratio is measured in the same run
(cases alternate between the generators, so load changes hit both alike).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequences", default="t1,t2")
    args = p.parse_args()
    from make_phantom_figure import old_phantom_module

    from SpineSegDiffLib.data.phantom import generate_case

    old = old_phantom_module().generate_case
    seqs = tuple(args.sequences.split(","))
    times: dict[str, list[float]] = {"new": [], "old": []}
    for i in range(args.cases):
        for name, fn, s in (("old", old, tuple(q for q in seqs if q in ("t1", "t2")) or ("t1",)), ("new", generate_case, seqs)):
            t0 = time.perf_counter()
            fn(args.seed, i, s)
            times[name].append(time.perf_counter() - t0)
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    print(json.dumps({"seconds_per_case": {k: round(v, 2) for k, v in mean.items()},
                      "new_over_old": round(mean["new"] / mean["old"], 2), "sequences": list(seqs),
                      "cases": args.cases, "load_average": [round(v, 2) for v in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
