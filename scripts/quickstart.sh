#!/usr/bin/env bash
# Quickstart main job: set up, prepare the embedded moving_digits dataset if absent, train the
# default config, write checkpoints, metrics and sample GIFs to workdirs/moving_digits.
#   bash scripts/quickstart.sh [--config.FIELD=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
WORKDIR="${WORKDIR:-workdirs/moving_digits}"
exec .venv/bin/python -m launch.train --config=configs/moving_digits.py --workdir="$WORKDIR" "$@"
