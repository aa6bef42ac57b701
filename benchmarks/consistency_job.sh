#!/usr/bin/env bash
# Wall time of `make consistency2` as a newcomer meets it, in parts that fit a working day: the first part
# clones the repository into WORKDIR (venv, data, run store all built there); a later part reruns the target
# in the same clone and store for the next seeds (a rerun skips finished runs, a killed run resumes from its
# checkpoint). Each part's seeds and wall time are appended to WORKDIR/parts.tsv. The analysis writes
# WORKDIR/ifrvis/results/consistency2 (the last part's covers every run in the store); each part ends by
# checking the runs so far against the committed rows of their identity (analysis/parts.py).
# Usage: bash benchmarks/consistency_job.sh WORKDIR FIRST_SEED LAST_SEED   (seeds in steps of 2, e.g. 0 1)
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 WORKDIR FIRST_SEED LAST_SEED" >&2; exit 2; }
work=$1 first=$2 last=$3
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
mkdir -p "$work"
[ -d "$work/ifrvis" ] || git clone --quiet "$repo" "$work/ifrvis"
cd "$work/ifrvis"
start=$(date +%s)
make consistency2 CONSISTENCY_FROM="$first" CONSISTENCY_SEEDS=$((last + 1)) \
  MLFLOW_TRACKING_URI="sqlite:///$work/ifrvis/mlflow.db" 2>&1 | tee -a "$work/consistency2.log" | grep -v '^\s*$' | tail -n 30
seconds=$(( $(date +%s) - start ))
printf '%s\t%s\t%s\t%s\n' "$(git rev-parse --short HEAD)" "$first-$last" "$seconds" "$(date -u +%FT%TZ)" >> "$work/parts.tsv"
echo "make consistency2, seeds $first-$last, from $work/ifrvis: $seconds s (log: $work/consistency2.log)"
.venv/bin/python -m analysis.parts results/consistency2/consistency_runs.csv \
  benchmarks/results/consistency2/consistency_runs.csv || true  # a difference is reported, not fatal
