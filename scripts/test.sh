#!/usr/bin/env bash
# Run the test suite (default: everything not marked slow). Does its own set-up first.
#   bash scripts/test.sh                 # the default suite
#   bash scripts/test.sh -m slow         # only the slow end-to-end runs
#   bash scripts/test.sh tests/foundation -k compat
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${CONKD_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
