"""`spinesegdiff` command line: sub-commands, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import Sequence

from SpineSegDiffLib import __version__
from SpineSegDiffLib.core.errors import SpineSegDiffError
from SpineSegDiffLib.core.log import configure_cli_logging

# command name -> (module under SpineSegDiffLib.cli, one-line help).
# The help text lives here too so `--help` does not import the heavy modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "segment a phantom (and a real case when a real-data folder is given) with the demo model"),
    "segment": ("segment", "segment lumbar spine MRI and write segmentation, uncertainty and a summary"),
    "measure": ("measure", "levels and per-level measurements of an existing segmentation (no model)"),
    "train": ("train", "train a model on SPIDER folders, exported retraining sets or partial-label real MRI"),
    "evaluate": ("evaluate", "score a model on labelled data: Dice, HD95, uncertainty quality; JSON + report"),
    "phantom": ("phantom", "write synthetic lumbar MRI phantoms as a SPIDER-format folder"),
    "models": ("models", "list the registered models, or add a model file (.zip) from disk"),
    "dicom-seg": ("dicom_seg", "write a labelmap on a DICOM series as a DICOM SEG (the writer `segment` uses)"),
    "info": ("info", "show the version, the device a run would use, and the caches (size; --clear-cache)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinesegdiff",
        description="Lumbar spine MRI segmentation (spinal canal, vertebrae, intervertebral "
                    "discs) with a conditional diffusion model and voxel-wise uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"spinesegdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # configure lazily only for the command being parsed: see main()
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, like KeyboardInterrupt."""


def _terminate(signum, frame) -> None:
    raise _Terminated()


def _load(module_name: str):
    return importlib.import_module(f"SpineSegDiffLib.cli.{module_name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Configure only the chosen sub-command's parser, so `spinesegdiff phantom ...`
    # never imports torch and `spinesegdiff --help` imports nothing heavy.
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS:
        sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        _load(COMMANDS[command][0]).configure_parser(sub_action.choices[command])
    args = parser.parse_args(argv)
    # Cancel (from the Slicer module or a batch system) sends SIGTERM: turn it into an
    # exception so the temporary-file clean-up in `finally` blocks runs before exit
    signal.signal(signal.SIGTERM, _terminate)
    configure_cli_logging()
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(_load(args._module).run(args) or 0)
    except SpineSegDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except _Terminated:
        print("error: cancelled; no partial output was kept", file=sys.stderr)
        return 143
    except MemoryError:
        print("error: out of memory; try fewer samples, fewer slices per batch or a smaller "
              "in-plane size", file=sys.stderr)
        return 3
