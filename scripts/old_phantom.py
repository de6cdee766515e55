"""The phantom generator as it was before the anatomy of issue 11 (commit 13380df), for
side-by-side figures and the old-vs-new ablation. Imported by scripts/make_phantom_figure.py
and benchmarks/phantom_ablation.py; needs a git checkout."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

OLD_COMMIT = "13380df"
REPO = Path(__file__).resolve().parents[1]


def old_phantom_module():
    """The phantom module as it was at OLD_COMMIT, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:SpineSegDiffLib/data/phantom.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_phantom.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_phantom", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_phantom"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
