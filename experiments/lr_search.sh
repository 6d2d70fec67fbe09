#!/usr/bin/env bash
# Experiment `lr_search` (each method's own learning rate; the paper states only SaRA's, Eq. 12),
# run by experiments/run_experiment.sh:
#   bash experiments/lr_search.sh [hydra overrides for every run, e.g. backbone=sd15 seed=0,1,2]
# Outputs: outputs/runs/lr_search*/..., outputs/results/lr_search.csv, outputs/analysis/lr_search/,
# and results/lr/<backbone>.yaml (the rates `train.lr=tuned` reads).
SWEEPS=(
  "+experiment=lr_search method=full budget=none train.lr=1e-3 train.steps=0 experiment_name=lr_search--base"  # pre-trained
  "+experiment=lr_search"
  "+experiment=lr_search method=full budget=none"
  "+experiment=lr_search method=diffpruning budget=10M"   # Table 4's DiffPruning row is at 10M
)
REFINE=analysis.lr_table  # a grid whose best rate is at its edge gets the next rate beyond it (1-3-10), until inside
ANALYSES=(
  "lr_table"
)
source "$(dirname "$0")/run_experiment.sh"
