#!/usr/bin/env bash
# Experiment `scaling` (paper Fig. 16, App. F; needs the style runs (sara, 50M)), run by experiments/run_experiment.sh:
#   bash experiments/scaling.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/scaling*/..., outputs/results/scaling.csv, outputs/analysis/scaling/
SWEEPS=(
  "+experiment=scaling"
)
ANALYSES=(
  "fig16_scaling"
)
source "$(dirname "$0")/run_experiment.sh"
