#!/usr/bin/env bash
# Experiment `seeds` (not a paper table: the seed-to-seed spread that single-seed comparisons sit in). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the table/figure.
#   bash experiments/seeds.sh [hydra overrides for every run, e.g. data.name=BarbieCore hydra/launcher=local]
# Outputs: outputs/runs/seeds/..., outputs/results/seeds.csv, outputs/analysis/seeds/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=seeds "$@" || status=$?
python -m sara.results --root outputs/runs --experiment seeds --csv outputs/results/seeds.csv || status=$?
python analysis/seed_spread.py --results outputs/results/seeds.csv --out outputs/analysis/seeds || status=$?
exit $status
