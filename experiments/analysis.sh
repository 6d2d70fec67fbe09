#!/usr/bin/env bash
# Experiment `analysis` (paper Figs. 19, 20, 25-27 and Table 10). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/analysis.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/analysis*/..., outputs/results/analysis.csv, outputs/analysis/analysis/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=analysis "$@" || status=$?
python -m sara.results --root outputs/runs --experiment analysis --csv outputs/results/analysis.csv || status=$?
python analysis/fig19_subspace.py --results outputs/results/analysis.csv --out outputs/analysis/analysis || status=$?
python analysis/table10_amplification.py --results outputs/results/analysis.csv --out outputs/analysis/analysis || status=$?
exit $status
