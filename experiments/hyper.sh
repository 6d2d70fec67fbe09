#!/usr/bin/env bash
# Experiment `hyper` (paper Figs. 21-24 and the Eq. 12 fit), run by experiments/run_experiment.sh:
#   bash experiments/hyper.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/hyper*/..., outputs/results/hyper.csv, outputs/analysis/hyper/
SWEEPS=(
  "+experiment=hyper"
  "+experiment=hyper_lr_piter"
  "+experiment=hyper_rank_piter"
)
ANALYSES=(
  "fig21_24_hyper"
)
source "$(dirname "$0")/run_experiment.sh"
