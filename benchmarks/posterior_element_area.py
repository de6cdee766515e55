#!/usr/bin/env python
"""How much vertebra lies outside the bodies, per sagittal slice, on the phantoms: the basis
of the vertebra size prior's ratio (`training/size_prior.py`, `--vertebra-size-prior`).

    .venv/bin/python benchmarks/posterior_element_area.py --phantoms 12 [--seed 1001]

For each phantom the bodies of L1..L5 (the levels every real body-only set labels) are painted
alone on the phantom's own grid. Within their superior-inferior span, the vertebra label
outside them (pedicles, laminae, articular and spinous processes, and the bodies of levels
the span cuts) is measured per sagittal slice and divided by the mean body area of the slices
that hold a body, which is the budget's unit. Also printed: whole vertebra / body volume in
the span (`span_volume_ratio`, the real-data measure whose target is 1.4-2.6).
Results: results/posterior_element_area-<date>.json / .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

LUMBAR_BODIES = range(2, 7)  # SPIDER values of L5 .. L1


def measure(seed: int, index: int) -> dict:
    from SpineSegDiffLib.data.phantom.anatomy import SUBSLICES, draw_anatomy
    from SpineSegDiffLib.data.phantom.bones import paint_body
    from SpineSegDiffLib.data.phantom.grid import Grid
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic
    from SpineSegDiffLib.evaluation.partial_label_scores import span_volume_ratio

    anatomy = draw_anatomy(seed, index)
    grid = anatomy.grid
    bodies_only = Grid(grid.s, grid.p, grid.x, np.zeros_like(grid.s), 0.0, SUBSLICES)
    bodies_only.l = grid.l  # the same scoliotic midline as the case
    for seg in anatomy.segments:
        if seg.value in LUMBAR_BODIES:
            paint_body(bodies_only, seg, seg.value)
    body = bodies_only.label[:, :, SUBSLICES // 2::SUBSLICES] > 0  # (rows s, cols p, slices)
    vertebra = spider_to_semantic(anatomy.label) == 2
    rows = np.nonzero(body.any(axis=(1, 2)))[0]
    span = slice(rows[0], rows[-1] + 1)
    per_slice_body = body.sum(axis=(0, 1))
    mean_body = per_slice_body.sum() / np.count_nonzero(per_slice_body)
    outside = (vertebra & ~body)[span].sum(axis=(0, 1)) / mean_body
    return {"case": f"phantom{seed}_{index}", "slices": int(body.shape[2]),
            "max_per_slice": float(outside.max()), "mean_per_slice": float(outside.mean()),
            "span_volume_ratio": span_volume_ratio(vertebra, body, 0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phantoms", type=int, default=12)
    p.add_argument("--seed", type=int, default=1001, help="1001: the unseen test phantoms' series")
    args = p.parse_args()
    rows = [measure(args.seed, i) for i in range(args.phantoms)]
    highest = max(r["max_per_slice"] for r in rows)
    ratios = [r["span_volume_ratio"] for r in rows]
    lines = ["| case | slices | outside-body vertebra per slice / mean body slice: max | mean | vertebra / body in span |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['slices']} | {r['max_per_slice']:.2f} | {r['mean_per_slice']:.2f} | "
              f"{r['span_volume_ratio']:.2f} |" for r in rows]
    lines.append(f"\nHighest per-slice share: {highest:.2f}; vertebra / body in the span "
                 f"{min(ratios):.2f}-{max(ratios):.2f}.")
    print("\n".join(lines))
    out = REPO / "benchmarks" / "results" / f"posterior_element_area-{dt.date.today().isoformat()}"
    out.with_suffix(".json").write_text(json.dumps({"seed": args.seed, "cases": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
