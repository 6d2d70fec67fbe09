#!/usr/bin/env bash
# Experiment `pruning` (paper Fig. 2), run by experiments/run_experiment.sh:
#   bash experiments/pruning.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/pruning*/..., outputs/results/pruning.csv, outputs/analysis/pruning/
SWEEPS=(
  "+experiment=pruning"
)
ANALYSES=(
  "fig2_pruning"
)
source "$(dirname "$0")/run_experiment.sh"
