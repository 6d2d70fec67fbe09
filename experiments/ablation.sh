#!/usr/bin/env bash
# Experiment `ablation` (paper Tables 2 and 9). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/ablation.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/ablation*/..., outputs/results/ablation.csv, outputs/analysis/ablation/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=ablation "$@" || status=$?
python run.py -m +experiment=ablation data.name=Cyberpunk,ElementFire method=sara,sara_no_rank "$@" || status=$?
python -m sara.results --root outputs/runs --experiment ablation --csv outputs/results/ablation.csv || status=$?
python analysis/table2_ablation.py --results outputs/results/ablation.csv --out outputs/analysis/ablation || status=$?
python analysis/table9_rank.py --results outputs/results/ablation.csv --out outputs/analysis/ablation || status=$?
exit $status
