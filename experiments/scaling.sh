#!/usr/bin/env bash
# Experiment `scaling` (paper Fig. 16, App. F; needs the style runs (sara, 50M)). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/scaling.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/scaling*/..., outputs/results/scaling.csv, outputs/analysis/scaling/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=scaling "$@" || status=$?
python -m sara.results --root outputs/runs --experiment scaling --csv outputs/results/scaling.csv || status=$?
python analysis/fig16_scaling.py --results outputs/results/scaling.csv --out outputs/analysis/scaling || status=$?
exit $status
