"""Write SpineSegDiff/Resources/Terminology/SpineSegDiff.term.json from the engine's label table.

Run after changing SpineSegDiffLib/core/labels.py; Testing/test_terminology.py fails while
the shipped file and the label table disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.core.atomic import write_text  # noqa: E402
from SpineSegDiffLib.core.terminology_json import terminology_text  # noqa: E402

DEFAULT = REPO / "SpineSegDiff" / "Resources" / "Terminology" / "SpineSegDiff.term.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT)
    args = parser.parse_args()
    write_text(args.output, terminology_text())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
