#!/usr/bin/env bash
# Set up the environment from the project's own files and run lint + tests.
#   bash scripts/test.sh            # the default suite (what CI runs)
#   bash scripts/test.sh --slow     # only the slow tests
#   bash scripts/test.sh -k model   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
args=()
for a in "$@"; do
  if [[ "$a" == "--slow" ]]; then args+=(-m slow); else args+=("$a"); fi
done
# pytest exits 5 when no test ran: `set -e` turns that (and any failure) into a failed run.
exec .venv/bin/pytest -n "${VDM_TEST_WORKERS:-2}" "${args[@]}"
