#!/usr/bin/env bash
# Sets everything up, then runs the main job on the bundled defaults.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/spinesegdiff demo --out "${1:-out/demo}"
