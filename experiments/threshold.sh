#!/usr/bin/env bash
# Experiment `threshold` (paper Table 8). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/threshold.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/threshold*/..., outputs/results/threshold.csv, outputs/analysis/threshold/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=threshold "$@" || status=$?
python -m sara.results --root outputs/runs --experiment threshold --csv outputs/results/threshold.csv || status=$?
python analysis/table8_threshold.py --results outputs/results/threshold.csv --out outputs/analysis/threshold || status=$?
exit $status
