#!/usr/bin/env bash
# Create .venv (if absent) and install vdm_jax with its dev + eval extras. Sourced by the other scripts.
set -euo pipefail
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.vdm_installed
if [[ ! -f "$stamp" || setup.py -nt "$stamp" ]]; then
  echo "== installing vdm_jax[dev,eval] (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,eval]"
  touch "$stamp"
fi
