#!/usr/bin/env bash
# Every experiment of SPEC §4 that the embedded world supports, in dependency order (scaling and
# merging reuse the style runs), then every figure/table, the comparison with the paper and the
# claims report. Hours to days on a CPU; re-running skips every finished run.
#   bash experiments/all.sh [hydra overrides for every run, e.g. hydra/launcher=local]
set -uo pipefail
cd "$(dirname "$0")"
status=0
for e in style bvqa ablation threshold hyper pruning migration backbone analysis scaling merging seeds; do
  start=$(date +%s)
  bash "$e.sh" "$@" || status=$?
  echo "experiment $e: $(( $(date +%s) - start )) s (exit status so far: $status)"
done
bash report.sh --collect outputs/runs --write-docs || status=$?
exit $status
