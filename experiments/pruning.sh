#!/usr/bin/env bash
# Experiment `pruning` (paper Fig. 2). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/pruning.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/pruning*/..., outputs/results/pruning.csv, outputs/analysis/pruning/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=pruning "$@" || status=$?
python -m sara.results --root outputs/runs --experiment pruning --csv outputs/results/pruning.csv || status=$?
python analysis/fig2_pruning.py --results outputs/results/pruning.csv --out outputs/analysis/pruning || status=$?
exit $status
