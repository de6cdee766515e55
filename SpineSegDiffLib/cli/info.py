"""`spinesegdiff info`: version, the device a run would use, and the caches (size, clearing).

The Slicer module runs this in the engine's process (torch lives there, not in Slicer's
GUI process) to show the device before a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from SpineSegDiffLib.core import caches


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts and the Slicer module)")
    p.add_argument("--clear-cache", choices=caches.KINDS, action="append", default=[],
                   help="remove a cache: 'ensembles' (cached samples, derived from patient images) or "
                        "'models' (downloaded model files; models you added are kept); repeatable")


def devices() -> dict:
    """What torch sees: CUDA GPUs (name, memory), Apple MPS, CPU threads; and the default choice.
    Without torch (Slicer before its dependencies are installed) the caches are still reported."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda": [], "mps": False,
                "cpu": {"threads": None, "cores": os.cpu_count(), "machine": platform.machine()},
                "auto": "cpu", "note": "torch is not installed; a run installs it (Slicer) or: pip install torch"}

    from SpineSegDiffLib.model.devices import choose_device

    cuda = [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 1024 ** 3, 1)}
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    chosen, note = choose_device("auto")
    return {"torch": torch.__version__, "cuda": cuda, "mps": bool(mps is not None and mps.is_available()),
            "cpu": {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "machine": platform.machine()},
            "auto": str(chosen), "note": note}


def _size(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MB" if n < 1024 ** 3 else f"{n / 1024 ** 3:.2f} GB"


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib import __version__

    freed = {kind: caches.clear(kind) for kind in dict.fromkeys(args.clear_cache)}
    report = {"spinesegdiff": __version__, "devices": devices(), "caches": caches.describe(),
              "cleared_bytes": freed}
    if args.json:
        print(json.dumps(report))
        return 0
    d = report["devices"]
    print(f"spinesegdiff {__version__}, torch {d['torch'] or 'not installed'}")
    for gpu in d["cuda"]:
        print(f"  CUDA {gpu['index']}: {gpu['name']} ({gpu['memory_gb']} GB)")
    print(f"  Apple MPS: {'available' if d['mps'] else 'not available'}")
    print(f"  CPU: {d['cpu']['cores']} cores, torch uses {d['cpu']['threads'] or '?'} threads")
    print(f"  a run with --device auto uses: {d['auto']}")
    for kind, bytes_ in freed.items():
        print(f"cleared the {kind} cache: {_size(bytes_)} freed")
    for kind, c in report["caches"].items():
        print(f"{kind} cache: {c['folder']} ({_size(c['bytes'])}); clearing removes {c['clears']}")
    return 0
