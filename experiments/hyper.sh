#!/usr/bin/env bash
# Experiment `hyper` (paper Figs. 21-24 and the Eq. 12 fit). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/hyper.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/hyper*/..., outputs/results/hyper.csv, outputs/analysis/hyper/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=hyper "$@" || status=$?
python run.py -m +experiment=hyper_lr_piter "$@" || status=$?
python run.py -m +experiment=hyper_rank_piter "$@" || status=$?
python -m sara.results --root outputs/runs --experiment hyper --csv outputs/results/hyper.csv || status=$?
python analysis/fig21_24_hyper.py --results outputs/results/hyper.csv --out outputs/analysis/hyper || status=$?
exit $status
