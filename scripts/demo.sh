#!/usr/bin/env bash
# Sets everything up, then runs the main job on the bundled defaults.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# the real development set beside the checkout, when there is one (the engine assumes no path)
if [ -z "${SPINESEGDIFF_REAL_DATA:-}" ] && [ -f "$root/../shared/data/real/cases.csv" ]; then
  export SPINESEGDIFF_REAL_DATA="$(cd "$root/../shared/data/real" && pwd)"
fi
exec .venv/bin/spinesegdiff demo --out "${1:-out/demo}"
