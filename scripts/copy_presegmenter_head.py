#!/usr/bin/env python
"""Put one model file's presegmenter head (its `presegmenter.*` weights and model.json's
`presegmentation`) onto another model file's denoiser, as the starting point of
`add_presegmenter.py`'s re-fit after the denoiser was fine-tuned (how 2.1.0 and 2.2.0
were made; README, *The demo model*).

    .venv/bin/python scripts/copy_presegmenter_head.py DENOISER.zip HEAD_FROM.zip OUT.zip
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("denoiser", type=Path, help="model file whose denoiser is kept")
    p.add_argument("head_from", type=Path, help="model file with the presegmenter head to copy")
    p.add_argument("out", type=Path, help="new model file (.zip)")
    args = p.parse_args()

    from SpineSegDiffLib.core.errors import SpineSegDiffError
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model
    from SpineSegDiffLib.model.presegmenter import split_state

    try:
        target, source = load_model_file(args.denoiser), load_model_file(args.head_from)
        denoiser, _ = split_state(target.state_dict)
        _, head = split_state(source.state_dict)
        if not head or "presegmentation" not in source.metadata:
            print(f"error: {args.head_from} has no presegmenter head", file=sys.stderr)
            return 2
        meta = dict(target.metadata)
        meta["presegmentation"] = source.metadata["presegmentation"]
        save_model(args.out, {**denoiser, **head}, meta)
    except SpineSegDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.denoiser.name}'s denoiser with {len(head)} head tensors of {args.head_from.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
