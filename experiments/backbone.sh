#!/usr/bin/env bash
# Experiment `backbone` (paper Fig. 6). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/backbone.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/backbone*/..., outputs/results/backbone.csv, outputs/analysis/backbone/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=backbone "$@" || status=$?
python run.py -m +experiment=backbone method=full budget=none "$@" || status=$?
python run.py -m +experiment=backbone method=full budget=none train.steps=0 experiment_name=backbone--pretrained "$@" || status=$?
python -m sara.results --root outputs/runs --experiment backbone --csv outputs/results/backbone.csv || status=$?
python analysis/fig6_backbone.py --results outputs/results/backbone.csv --out outputs/analysis/backbone || status=$?
exit $status
