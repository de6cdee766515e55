"""`spinesegdiff models`: list the registered models or add one from disk."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "add"], help="list: show models; add: register a .zip")
    p.add_argument("path", nargs="?", type=Path, help="for add: the model .zip")


def run(args: argparse.Namespace) -> int:
    from SpineSegDiffLib.core.errors import InputError
    from SpineSegDiffLib.model.registry import add_user_model, all_models

    if args.action == "add":
        if args.path is None:
            raise InputError("models add needs the path of a model .zip")
        from SpineSegDiffLib.model.registry import load_registry

        entry = add_user_model(args.path)
        print(f"added {entry.id} {entry.version} ({entry.title})")
        bundled = [e for e in load_registry() if e.id == entry.id and e.version != entry.version]
        if bundled:
            print(f"note: '{entry.id}' now means this version {entry.version}, not the bundled "
                  f"{bundled[-1].version}")
        return 0
    for entry in all_models():
        print(f"{entry.id:<28} {entry.version:<10} {entry.title}")
    return 0
