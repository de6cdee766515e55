#!/usr/bin/env python
"""Make a trained model file the bundled demo model: its weights (denoiser and, if it has
one, presegmenter head), the scores of the scoring run, the version, the presegmentation
default start; then point `resources/Models.json` at it (sha256, size, version, training
data, description). The last step of the recipe in the README, *The demo model*.

    .venv/bin/python scripts/package_demo_model.py runs/A/model-pre.zip --scores runs/A/model.zip \\
        --version 2.3.0 --default-start noise --training-data "2.3.0: ..." --description "..."

Both files are written to temporary names, checked (the model file loads and matches the
registry entry) and then renamed, so a failure leaves the bundled model as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402

BUNDLED = BUNDLED_DEMO_MODEL
REGISTRY = REPO / "SpineSegDiffLib" / "resources" / "Models.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="model file whose weights (and presegmentation record) are bundled")
    p.add_argument("--scores", type=Path, default=None,
                   help="model file written by train_demo_model.py's scoring run; its model.json `metrics` "
                        "are copied (default: keep the weights file's own)")
    p.add_argument("--version", required=True, help="version written into model.json and Models.json")
    p.add_argument("--default-start", choices=("noise", "presegmentation"), default=None,
                   help="presegmentation.default_start of a model with a presegmenter head")
    p.add_argument("--training-data", default=None,
                   help="text appended (after '; ') to the Models.json entry's training_data")
    p.add_argument("--description", default=None, help="new Models.json description")
    p.add_argument("--out", type=Path, default=BUNDLED, help="model file to write (default: the bundled one)")
    p.add_argument("--registry", type=Path, default=REGISTRY, help="Models.json to update (default: the bundled one)")
    p.add_argument("--model-id", default="spinesegdiff-demo", help="registry entry to update")
    args = p.parse_args()

    from SpineSegDiffLib.core.errors import SpineSegDiffError
    from SpineSegDiffLib.core.hashing import sha256_file
    from SpineSegDiffLib.model.modelfile import load_model_file, save_model
    from SpineSegDiffLib.model.registry import validate_registry

    tmp_model = args.out.with_name(args.out.name + ".packaging")
    tmp_registry = args.registry.with_name(args.registry.name + ".packaging")
    try:
        registry = json.loads(args.registry.read_text())
        validate_registry(registry, args.registry)
        entries = [e for e in registry["models"] if e["id"] == args.model_id]
        if len(entries) != 1:
            p.error(f"{args.registry} has {len(entries)} entries with id {args.model_id!r}, expected one")
        source = load_model_file(args.weights)
        meta = dict(source.metadata)
        if meta.get("id") != args.model_id:
            p.error(f"{args.weights} is model {meta.get('id')!r}, not {args.model_id!r}")
        if args.scores is not None:
            scored = load_model_file(args.scores)
            if scored.metadata.get("weights_sha256") != meta.get("weights_sha256") and not _same_denoiser(
                    scored.state_dict, source.state_dict):
                p.error(f"{args.scores} scored other weights than {args.weights}'s denoiser")
            meta["metrics"] = {**meta.get("metrics", {}), **scored.metadata.get("metrics", {})}
        if args.default_start is not None:
            if "presegmentation" not in meta:
                p.error(f"{args.weights} has no presegmenter head: --default-start does not apply")
            meta["presegmentation"] = {**meta["presegmentation"], "default_start": args.default_start}
        meta["version"] = args.version
        meta.pop("created", None)  # save_model stamps the packaging time

        save_model(tmp_model, source.state_dict, meta)
        load_model_file(tmp_model)  # refuses a file that would not load
        entry = entries[0]
        entry.update(version=args.version, sha256=sha256_file(tmp_model), size_bytes=tmp_model.stat().st_size)
        if args.training_data:
            entry["training_data"] = f"{entry.get('training_data', '')}; {args.training_data}".lstrip("; ")
        if args.description:
            entry["description"] = args.description
        validate_registry(registry, args.registry)
        tmp_registry.write_text(json.dumps(registry, indent=2, ensure_ascii=False) + "\n")
        tmp_model.replace(args.out)
        tmp_registry.replace(args.registry)
    except SpineSegDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:  # a failed run leaves no half-made file behind
        for tmp in (tmp_model, tmp_registry):
            tmp.unlink(missing_ok=True)
    print(f"{args.out}: {args.model_id} {args.version}, {entry['size_bytes']} bytes, sha256 {entry['sha256']}")
    return 0


def _same_denoiser(scored: dict, source: dict) -> bool:
    """Whether the scored file's weights equal the weights file's non-head weights."""
    from SpineSegDiffLib.model.presegmenter import split_state

    a, _ = split_state(scored)
    b, _ = split_state(source)
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


if __name__ == "__main__":
    sys.exit(main())
