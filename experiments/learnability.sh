#!/usr/bin/env bash
# Experiment `learnability` (not a paper table: whether the embedded world learns each style set at
# the style experiment's schedule), run by experiments/run_experiment.sh:
#   bash experiments/learnability.sh [hydra overrides for every run, e.g. train.steps=900 torch_threads=1]
# Outputs: outputs/runs/learnability*/..., outputs/results/learnability.csv,
# outputs/analysis/learnability/ (learnability.{md,csv})
SWEEPS=(
  "+experiment=learnability method=full budget=none train.steps=0 experiment_name=learnability--base"
  "+experiment=learnability method=full budget=none"
  "+experiment=learnability"                                            # SaRA at 50M
)
ANALYSES=(
  "learnability"
)
source "$(dirname "$0")/run_experiment.sh"
