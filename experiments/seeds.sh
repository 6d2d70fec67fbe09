#!/usr/bin/env bash
# Experiment `seeds` (not a paper table: the seed-to-seed spread that single-seed comparisons sit in), run by experiments/run_experiment.sh:
#   bash experiments/seeds.sh [hydra overrides for every run, e.g. data.name=BarbieCore hydra/launcher=local]
# Outputs: outputs/runs/seeds/..., outputs/results/seeds.csv, outputs/analysis/seeds/
SWEEPS=(
  "+experiment=seeds"
)
ANALYSES=(
  "seed_spread"
)
source "$(dirname "$0")/run_experiment.sh"
