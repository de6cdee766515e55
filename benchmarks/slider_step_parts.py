#!/usr/bin/env python
"""CPU seconds per part of the sample slider's step (cProfile with ``time.process_time``).

``--mode cli``: the engine's `segment` process body (imports included); ``--mode inproc``: the
step in Slicer's process (``SpineSegDiffSlicerLib.cached_step`` into a slicer-core scene, after
one untimed warm-up). ``--tree``: the source tree to profile, this one or an older commit's
(``git archive COMMIT | tar -x -C DIR``) for a "before" column. The request must be cached
(``slider_step.py`` does that); ``inproc`` also needs that first run's summary.json.

    SPINESEGDIFF_CACHE=... .venv/bin/python benchmarks/slider_step_parts.py --image IMAGE \
        --mode inproc --first-run DIR_WITH_SUMMARY_JSON

The profiler adds about 20 %; ``slider_step.py`` gives the unprofiled totals.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--mode", choices=["cli", "inproc"], required=True)
    p.add_argument("--tree", type=Path, default=REPO)
    p.add_argument("--first-run", type=Path, help="inproc: the folder holding the first run's summary.json")
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--drawn", type=int, default=15)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    # the tree's own slider_step: importing it puts its tree first on sys.path, so the engine
    # profiled is that tree's too (this tree's copy would put this tree's engine first)
    sys.path[:0] = [str(args.tree), str(args.tree / "SpineSegDiff"), str(args.tree / "benchmarks")]
    started = time.process_time()
    profile = cProfile.Profile(time.process_time)
    if args.mode == "cli":
        out = Path(tempfile.mkdtemp(prefix="slider-parts-"))
        profile.enable()
        from SpineSegDiffLib.cli.entry import main as cli

        cli(["segment", str(args.image), "--model", args.model, "--samples", str(args.samples),
             "--steps", str(args.steps), "--output-segmentation", str(out / "seg.nii"),
             "--output-uncertainty", str(out / "unc.nii"), "--output-summary", str(out / "summary.json"),
             "--progress", "none"])
    else:
        import slider_step

        kit = slider_step.in_process_kit(args, args.first_run)
        slider_step.in_process(kit, args)  # Slicer imports the cached path once per session
        profile.enable()
        slider_step.in_process(kit, args)
    profile.disable()
    stats = pstats.Stats(profile).stats

    def cum(name: str) -> float:
        return round(sum(v[3] for k, v in stats.items() if k[2] == name), 3)

    parts = {
        "imports": cum("_find_and_load"),
        "request key + find": round(cum("request_key") + cum("find_request"), 3),
        "input onto the model grid": cum("to_model_grid"),
        "read samples": cum("load_leading"),
        "fusion": cum("fuse_samples"),
        "clean-up on the grid": cum("clean_masks"),
        "labelmap on the input (map back + labels)": round(cum("labelmap_on_input") - cum("clean_masks"), 3),
        "uncertainty on the input": round(cum("result_on_input") - cum("labelmap_on_input"), 3),
        "structure summary": cum("structure_summary"),
        "write files": round(cum("write_segmentation") + cum("write_float_image") + cum("write_summary"), 3),
        "import into the scene": round(cum("import_result_arrays") + cum("import_results"), 3),
        "volume node -> image": cum("sitk_from_node"),
    }
    total = time.process_time() - started if args.mode == "cli" else cum("in_process")
    print(json.dumps({"mode": args.mode, "tree": str(args.tree), "profiled_total_cpu_s": round(total, 3),
                      "parts": parts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
