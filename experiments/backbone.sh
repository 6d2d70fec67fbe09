#!/usr/bin/env bash
# Experiment `backbone` (paper Fig. 6), run by experiments/run_experiment.sh:
#   bash experiments/backbone.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/backbone*/..., outputs/results/backbone.csv, outputs/analysis/backbone/
SWEEPS=(
  "+experiment=backbone"
  "+experiment=backbone method=full budget=none"
  "+experiment=backbone method=full budget=none train.steps=0 experiment_name=backbone--pretrained"
)
ANALYSES=(
  "fig6_backbone"
)
source "$(dirname "$0")/run_experiment.sh"
