#!/usr/bin/env bash
# Idempotent set-up: a .venv with CPU torch 2.13.0 (installed first, alone), the pinned project and dev
# tools. Re-running does nothing unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.qsave-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing torch 2.13.0 (CPU) first, then the pinned project (a few minutes, once)"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  log=.venv/install.log
  : > "$log"
  pip_install() { .venv/bin/python -m pip install -q "$@" >> "$log" 2>&1 || { tail -n 60 "$log"; echo "[bootstrap] pip install $* failed; full log: $log" >&2; exit 1; }; }
  pip_install "torch==2.13.0"
  pip_install -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
  echo "[bootstrap] done (log: $log)"
fi
