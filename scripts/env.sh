# Sourced by the Makefile: settings that keep tools from writing to $HOME or phoning home.
export MLFLOW_DISABLE_TELEMETRY=true
export GX_ANALYTICS_ENABLED=False
export DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export MPLCONFIGDIR="${MPLCONFIGDIR:-$PWD/.cache/matplotlib}"
export QSAVE_HOME="${QSAVE_HOME:-$PWD/.qsave}"
export PATH="$PWD/.venv/bin:$PATH"
