#!/usr/bin/env bash
# Wall time of the main job as a newcomer meets it: a fresh clone, then `make table1` (venv, synthetic
# data, 10 tiny runs on the local executor, Table 1). Usage: bash benchmarks/main_job.sh [WORKDIR]
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${1:-$(mktemp -d)}
git clone --quiet "$repo" "$work/ifrvis"
cd "$work/ifrvis"
start=$(date +%s)
make table1 MLFLOW_TRACKING_URI="sqlite:///$work/ifrvis/mlflow.db" 2>&1 | tee "$work/table1.log" | grep -v '^\s*$' | tail -n 30
echo "make table1 from a fresh clone: $(( $(date +%s) - start )) s (log: $work/table1.log)"
