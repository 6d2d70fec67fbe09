#!/usr/bin/env bash
# Experiment `bvqa` (paper Tables 4 and 6: DoRA and DiffPruning added to the style runs; B-VQA), run by experiments/run_experiment.sh:
#   bash experiments/bvqa.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/style/... (the DoRA and DiffPruning runs), outputs/results/bvqa.csv, outputs/analysis/bvqa/
SWEEPS=(
  "+experiment=bvqa"                                          # DoRA and DiffPruning at 50M
  "+experiment=bvqa method=dora budget=5M,20M"                # Table 4's DoRA rows at the smaller budgets
  "+experiment=bvqa method=diffpruning budget=10M"            # Table 4's DiffPruning row is at 10M
)
RESULTS_OF=style  # the bvqa runs join the style experiment
ANALYSES=(
  "table1_style --name table4_style"
  "table1_style --name table6_bvqa"
)
source "$(dirname "$0")/run_experiment.sh"
