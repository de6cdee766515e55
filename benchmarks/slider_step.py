#!/usr/bin/env python
"""The sample slider's step end to end: `segment` lowering S from the sample cache, and the
Slicer module's re-import of what it wrote (slicer-core's MRML), against process floors
measured in the same run.

    .venv/bin/python benchmarks/slider_step.py --image ../shared/data/real/images/VB2_04.nii.gz \
        --drawn 15 --samples 5 --repeats 3

First makes sure ``--drawn`` samples are cached (a normal run; it draws what is missing),
then times, ``--repeats`` times each and interleaved so all see the same load:

* ``floor_python``: ``python -c pass``; ``floor_imports``: a process importing numpy and
  SimpleITK only (what any step must pay);
* ``module_outputs``: the command the Slicer module runs (``seg.nii``, ``unc.nii``, summary);
* ``seg_nrrd_outputs``: ``.seg.nrrd`` + ``.nii.gz`` uncertainty (a user's own command);
* ``reimport``: ``SpineSegDiffSlicerLib.results.import_results`` of the module outputs into
  a slicer-core scene (in this process; the Slicer app adds its own rendering);
* ``in_process``: what the module runs since 2026-12-02b when every sample is cached
  (``SpineSegDiffSlicerLib.cached_step``): fusion and import into the scene in this process,
  no engine process and no files; ``in_process_fuse`` / ``in_process_import`` are its parts.

Wall seconds and CPU seconds (user + sys of the child) per step; the CPU seconds are what
a quiet machine's wall time approaches. Results: results/slider_step-<date>.json / .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(command: list[str], env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def segment(image: Path, samples: int, out: Path, seg_name: str, unc_name: str, model: str,
            steps: int) -> list[str]:
    return [sys.executable, "-m", "SpineSegDiffLib", "segment", str(image), "--model", model,
            "--samples", str(samples), "--steps", str(steps), "--output-segmentation", str(out / seg_name),
            "--output-uncertainty", str(out / unc_name), "--output-summary", str(out / "summary.json"),
            "--progress", "json"]


def reimport(image: Path, out: Path) -> dict:
    import slicer
    from SpineSegDiffSlicerLib import volumes
    from SpineSegDiffSlicerLib.results import import_results

    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    volume = volumes.read_volume_node(image)
    scene.AddNode(volume)
    t0, c0 = time.perf_counter(), time.process_time()
    import_results(scene, logic, volume, out / "seg.nii", out / "unc.nii", out / "summary.json")
    return {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3)}


def in_process_kit(args, work: Path) -> dict:
    """A slicer-core scene holding the volume, as Slicer holds it, and the request recorded for it
    as ``engine_run`` does after the first engine run (``cached_step.remember_run``)."""
    import slicer
    from SpineSegDiffSlicerLib import volumes
    from SpineSegDiffSlicerLib.cached_step import remember_run

    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    volume = volumes.load_volume(scene, args.image)
    remember_run(volume, model=args.model, samples=args.drawn, steps=args.steps, device="auto",
                 summary=json.loads((work / "summary.json").read_text()))
    return {"scene": scene, "logic": logic, "volume": volume, "color_logic": color_logic}


def in_process(kit: dict, args) -> dict:
    """The slider's step in the module's own process: fuse + import, CPU seconds of this process."""
    from SpineSegDiffSlicerLib.cached_step import start_cached_step

    outcomes = []
    t0, c0 = time.perf_counter(), time.process_time()
    step = start_cached_step(kit["scene"], kit["logic"], kit["volume"], model=args.model, samples=args.samples,
                             steps=args.steps, device="auto", on_finished=outcomes.append)
    if step is None:
        raise SystemExit("the cached step was not served in this process")
    t1, c1 = time.perf_counter(), time.process_time()
    step.poll()
    t2, c2 = time.perf_counter(), time.process_time()
    if not outcomes[0].ok:
        raise SystemExit(f"the in-process import failed: {outcomes[0].message}")
    return {"in_process": {"wall_s": round(t2 - t0, 3), "cpu_s": round(c2 - c0, 3)},
            "in_process_fuse": {"wall_s": round(t1 - t0, 3), "cpu_s": round(c1 - c0, 3)},
            "in_process_import": {"wall_s": round(t2 - t1, 3), "cpu_s": round(c2 - c1, 3)}}


def cpu_features() -> dict:
    """The CPU's model name and the vector flags that decide numpy's kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model": model, "cores": os.cpu_count(),
            "flags": sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma")))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--model", default="spinesegdiff-demo")
    p.add_argument("--drawn", type=int, default=15)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results"
                   / f"slider_step-{dt.date.today().isoformat()}")
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "SpineSegDiff"))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work = Path(tempfile.mkdtemp(prefix="slider-step-"))
    first = timed(segment(args.image, args.drawn, work, "seg.nii", "unc.nii", args.model, args.steps), env)
    steps = {"floor_python": [sys.executable, "-c", "pass"],
             "floor_imports": [sys.executable, "-c", "import numpy, SimpleITK"],
             "module_outputs": segment(args.image, args.samples, work, "seg.nii", "unc.nii", args.model, args.steps),
             "seg_nrrd_outputs": segment(args.image, args.samples, work, "seg.seg.nrrd", "unc.nii.gz",
                                         args.model, args.steps)}
    times: dict[str, list[dict]] = {k: [] for k in [*steps, "reimport", "in_process", "in_process_fuse",
                                                     "in_process_import"]}
    kit = in_process_kit(args, work)
    in_process(kit, args)  # Slicer imports the engine's cached path once per session: not timed
    load = [os.getloadavg()]
    for _ in range(args.repeats):
        for name, command in steps.items():
            times[name].append(timed(command, env))
        timed(steps["module_outputs"], env)  # the re-import reads the module's outputs
        times["reimport"].append(reimport(args.image, work))
        for name, value in in_process(kit, args).items():
            times[name].append(value)
    load.append(os.getloadavg())
    summary = json.loads((work / "summary.json").read_text())
    median = {k: {m: sorted(t[m] for t in v)[len(v) // 2] for m in ("wall_s", "cpu_s")} for k, v in times.items()}
    floor = median["floor_imports"]
    record = {"date": dt.datetime.now().isoformat(timespec="seconds"), "image": args.image.name,
              "drawn": args.drawn, "samples": args.samples, "steps": args.steps, "repeats": args.repeats, "load_average": load,
              "cpu": cpu_features(), "first_run": first, "median": median, "all": times,
              "engine_timings_of_last_step": summary["timings"], "torch_free": summary["cache"].get("torch_free"),
              "module_step_plus_reimport": {m: round(median["module_outputs"][m] + median["reimport"][m], 3)
                                            for m in ("wall_s", "cpu_s")},
              "x_floor_imports": {k: round(v["cpu_s"] / max(floor["cpu_s"], 1e-3), 2) for k, v in median.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Slider step, {args.image.name}, S {args.drawn} -> {args.samples}, load {load}", "",
             "| step | wall s | CPU s | CPU x floor_imports |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['wall_s']} | {v['cpu_s']} | {record['x_floor_imports'][k]} |" for k, v in median.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"engine_timings": summary["timings"], "torch_free": record["torch_free"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
