#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the pinned dependencies and the engine installed
# in editable mode. Idempotent: a second run only compares a checksum of the
# requirement files and returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment in $root/.venv"
  "$python" -m venv .venv
fi
stamp=.venv/.spinesegdiff-requirements
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing pinned dependencies (first run takes about a minute; log: .venv/setup.log)"
# pip's chatter goes to a log; on failure the log's end is shown
if ! { .venv/bin/python -m pip install --disable-pip-version-check -r requirements-dev.txt &&
       .venv/bin/python -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . ; } \
     > .venv/setup.log 2>&1; then
  tail -n 30 .venv/setup.log >&2
  echo "[setup] failed: see $root/.venv/setup.log" >&2
  exit 1
fi
echo "$want" > "$stamp"
