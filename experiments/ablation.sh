#!/usr/bin/env bash
# Experiment `ablation` (paper Tables 2 and 9), run by experiments/run_experiment.sh:
#   bash experiments/ablation.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/ablation*/..., outputs/results/ablation.csv, outputs/analysis/ablation/
SWEEPS=(
  "+experiment=ablation"
  "+experiment=ablation data.name=Cyberpunk,ElementFire method=sara,sara_no_rank seed=0"
)
ANALYSES=(
  "table2_ablation"
  "table9_rank"
)
source "$(dirname "$0")/run_experiment.sh"
