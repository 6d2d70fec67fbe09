#!/usr/bin/env bash
# Experiment `migration` (paper Fig. 3), run by experiments/run_experiment.sh:
#   bash experiments/migration.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/migration*/..., outputs/results/migration.csv, outputs/analysis/migration/
SWEEPS=(
  "+experiment=migration"
)
ANALYSES=(
  "fig3_migration"
)
source "$(dirname "$0")/run_experiment.sh"
