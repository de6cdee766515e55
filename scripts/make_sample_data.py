"""Write the Slicer module's sample volume: a synthetic lumbar T2 phantom, and its SHA-256.

Run from the repository root: `python scripts/make_sample_data.py`. It writes
`SpineSegDiff/Resources/SampleData/spinesegdiff_phantom_t2.nrrd` and, beside it,
`spinesegdiff_phantom_t2.nrrd.sha256` (the checksum that the module gives to Slicer's
Sample Data module, which verifies the file before loading it). The phantom is fully
determined by its seed, so rerunning reproduces the same image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.core.atomic import write_text  # noqa: E402
from SpineSegDiffLib.core.hashing import sha256_file  # noqa: E402
from SpineSegDiffLib.data.imageio import write_image  # noqa: E402

DEFAULT_OUTPUT = REPO / "SpineSegDiff" / "Resources" / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
SEED, INDEX, SEQUENCE = 2026, 0, "t2"


def write_sample(output: Path = DEFAULT_OUTPUT, seed: int = SEED, index: int = INDEX) -> str:
    """Write the phantom's T2 image to ``output`` and its checksum sidecar; return the checksum."""
    from SpineSegDiffLib.data.phantom import generate_case

    case = generate_case(seed=seed, index=index, sequences=(SEQUENCE,))
    write_image(case.images[SEQUENCE], output)  # compressed, atomic
    checksum = sha256_file(output)
    write_text(output.with_name(output.name + ".sha256"), f"{checksum}  {output.name}\n")
    return checksum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--index", type=int, default=INDEX)
    args = parser.parse_args(argv)
    checksum = write_sample(args.output, args.seed, args.index)
    print(f"{args.output}\nSHA256:{checksum}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
