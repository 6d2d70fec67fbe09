#!/usr/bin/env bash
# Experiment `threshold` (paper Table 8), run by experiments/run_experiment.sh:
#   bash experiments/threshold.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/threshold*/..., outputs/results/threshold.csv, outputs/analysis/threshold/
SWEEPS=(
  "+experiment=threshold"
)
ANALYSES=(
  "table8_threshold"
)
source "$(dirname "$0")/run_experiment.sh"
