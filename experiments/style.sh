#!/usr/bin/env bash
# Experiment `style` (paper Tables 1, 4, 5; Table 6 with bvqa.sh), run by experiments/run_experiment.sh:
#   bash experiments/style.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/style*/..., outputs/results/style.csv, outputs/analysis/style/
SWEEPS=(
  "+experiment=style"
  "+experiment=style method=sara,lora,adaptformer,lt_sft budget=5M,20M"   # Table 1's smaller budgets (the paper's methods)
  "+experiment=style method=shira,super_tuning budget=5M,20M"   # peft's sparse methods at the smaller budgets
  "+experiment=style method=full budget=none"
  "+experiment=style method=full budget=none train.steps=0 experiment_name=style--base"   # the pre-trained row
)
ANALYSES=(
  "table1_style"
  "table1_style --name table1_peers"
  "style_samples --budget 50M --n 6 --tile 44 --methods full,lora,adaptformer,lt_sft,sara"
  "style_samples --budget 5M --n 6 --tile 44 --methods lora,adaptformer,lt_sft,sara --name style_samples_5M"
  "style_samples --budget 20M --n 6 --tile 44 --methods lora,adaptformer,lt_sft,sara --name style_samples_20M"
)
source "$(dirname "$0")/run_experiment.sh"
