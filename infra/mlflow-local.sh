#!/usr/bin/env bash
# Start an MLflow tracking + registry server for local development.
#
#   infra/mlflow-local.sh                    # http://127.0.0.1:5000, store in $QSAVE_HOME or ./
#   MLFLOW_HOST=0.0.0.0 MLFLOW_PORT=5001 infra/mlflow-local.sh   # only when you mean to expose it
#
# Store: sqlite at <dir>/mlflow.db, artifacts served from <dir>/mlartifacts, where <dir> is $QSAVE_STORE,
# else $QSAVE_HOME, else the working directory — the same place qsave's default tracking URI uses, so runs
# logged before the server existed show up in it. Then point qsave at it:
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
# The server binds 127.0.0.1 unless MLFLOW_HOST says otherwise (it has no authentication).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
store="${QSAVE_STORE:-${QSAVE_HOME:-$PWD}}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
mlflow_bin="${MLFLOW_BIN:-$here/.venv/bin/mlflow}"
[ -x "$mlflow_bin" ] || mlflow_bin="$(command -v mlflow)" || { echo "mlflow not found: create .venv or set MLFLOW_BIN" >&2; exit 1; }

mkdir -p "$store/mlartifacts"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# uvicorn (the server's ASGI runner) lives beside mlflow.
export PATH="$(dirname "$mlflow_bin"):$PATH"

echo "mlflow server on http://$host:$port (store $store)" >&2
exec "$mlflow_bin" server \
  --host "$host" \
  --port "$port" \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --artifacts-destination "$store/mlartifacts" \
  --serve-artifacts \
  --workers 1
