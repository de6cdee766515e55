"""The `spinesegdiff` command line: `main` and one module per sub-command."""

from SpineSegDiffLib.cli.entry import main

__all__ = ["main"]
