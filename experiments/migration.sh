#!/usr/bin/env bash
# Experiment `migration` (paper Fig. 3). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/migration.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/migration*/..., outputs/results/migration.csv, outputs/analysis/migration/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=migration "$@" || status=$?
python -m sara.results --root outputs/runs --experiment migration --csv outputs/results/migration.csv || status=$?
python analysis/fig3_migration.py --results outputs/results/migration.csv --out outputs/analysis/migration || status=$?
exit $status
