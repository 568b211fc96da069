#!/usr/bin/env bash
# Register every task, workflow and launch plan with a Flyte cluster, versioned by the git commit.
#
#   QSAVE_REGISTRY=registry.example.com/ml QSAVE_NOTIFY_EMAILS=ml-owners@example.com \
#     scripts/register.sh [-p qsave] [-d production] [--dry-run]
#
# - Version: qsave.versioning.code_version() — the commit (12 hex digits); a tree with uncommitted changes
#   is "<commit>-dirty" and is refused unless QSAVE_ALLOW_DIRTY=1 (its code would not match the images).
# - Images: QSAVE_CPU_IMAGE / QSAVE_GPU_IMAGE, default <QSAVE_REGISTRY>/qsave-{cpu,gpu}:<version> — build
#   and push them from containers/ at the same commit first (README, "Running on a cluster"). The code is
#   baked into the images (--copy none), so what runs is exactly the registered commit.
# - Training shape: QSAVE_NNODES (default 1) × QSAVE_NPROC_PER_NODE (default 8) GPUs per stage, under
#   Elastic/torchrun; the tasks carry both into their containers.
# - Launch plans: qsave_local, and qsave_weekly_retrain (cron QSAVE_RETRAIN_CRON, snapshot template
#   QSAVE_SNAPSHOT_URI, notifications to QSAVE_NOTIFY_EMAILS and QSAVE_NOTIFY_SLACK); schedules are
#   activated (--activate-launchplans).
# The cluster endpoint comes from the flytectl config (FLYTECTL_CONFIG or ~/.flyte/config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

project=qsave
domain=development
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--project) project="$2"; shift 2 ;;
    -d|--domain) domain="$2"; shift 2 ;;
    --dry-run) extra+=(--dry-run); shift ;;
    *) echo "register.sh: unknown argument $1 (use -p PROJECT, -d DOMAIN, --dry-run)" >&2; exit 2 ;;
  esac
done

version="$(python -c 'from qsave.versioning import code_version; print(code_version())')"
case "$version" in
  *-dirty)
    if [ "${QSAVE_ALLOW_DIRTY:-0}" != 1 ]; then
      echo "register.sh: the tree has uncommitted changes ($version); commit them (and rebuild the images)" \
           "or set QSAVE_ALLOW_DIRTY=1" >&2
      exit 1
    fi ;;
esac
if [ -z "${QSAVE_NOTIFY_EMAILS:-}" ]; then
  echo "register.sh: set QSAVE_NOTIFY_EMAILS (comma-separated) — the weekly retraining reports to them" >&2
  exit 1
fi

registry="${QSAVE_REGISTRY:-ghcr.io/qsave}"
export QSAVE_CPU_IMAGE="${QSAVE_CPU_IMAGE:-$registry/qsave-cpu:$version}"
export QSAVE_GPU_IMAGE="${QSAVE_GPU_IMAGE:-$registry/qsave-gpu:$version}"
export QSAVE_NNODES="${QSAVE_NNODES:-1}"
export QSAVE_NPROC_PER_NODE="${QSAVE_NPROC_PER_NODE:-8}"

echo "registering qsave $version to $project/$domain: CPU $QSAVE_CPU_IMAGE, GPU $QSAVE_GPU_IMAGE," \
     "training ${QSAVE_NNODES}x${QSAVE_NPROC_PER_NODE} GPUs" >&2
exec pyflyte register \
  --project "$project" --domain "$domain" \
  --version "$version" \
  --image "$QSAVE_CPU_IMAGE" \
  --copy none \
  --activate-launchplans \
  "${extra[@]}" \
  workflows
