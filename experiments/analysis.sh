#!/usr/bin/env bash
# Experiment `analysis` (paper Figs. 19, 20, 25-27 and Table 10), run by experiments/run_experiment.sh:
#   bash experiments/analysis.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/analysis*/..., outputs/results/analysis.csv, outputs/analysis/analysis/
SWEEPS=(
  "+experiment=analysis"
)
ANALYSES=(
  "fig19_subspace"
  "table10_amplification"
)
source "$(dirname "$0")/run_experiment.sh"
