#!/usr/bin/env bash
# Experiment `learnability` (not a paper table: whether the embedded world learns each style set at
# the style experiment's schedule), run by experiments/run_experiment.sh:
#   bash experiments/learnability.sh [hydra overrides for every run, e.g. train.steps=900 torch_threads=1]
# Outputs: outputs/runs/learnability*/..., outputs/results/learnability.csv,
# outputs/analysis/learnability/ (learnability.{md,csv})
# Rates: the best of a three-point grid at 300 steps on Cyberpunk, seed 0 (full fine-tuning:
# 1e-4 / 3e-4 / 1e-3; SaRA 50M: Eq. 12's 3.9e-4 / 2e-3 / 6e-3), until the learning-rate search
# (experiments/lr_search.sh) has written tuned rates for the backbone.
SWEEPS=(
  "+experiment=learnability method=full budget=none train.steps=0 experiment_name=learnability--base"
  "+experiment=learnability method=full budget=none train.lr=1e-3"
  "+experiment=learnability train.lr=2e-3"                              # SaRA at 50M
)
ANALYSES=(
  "learnability"
)
source "$(dirname "$0")/run_experiment.sh"
