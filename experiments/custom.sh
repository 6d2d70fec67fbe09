#!/usr/bin/env bash
# Experiment `custom` (paper Table 7, Fig. 14, App. D), run by experiments/run_experiment.sh:
# DreamBooth with prior preservation for full fine-tuning and four PEFT methods at one budget, and
# Textual Inversion, on three subjects; the pre-trained model sampled with the same prompts.
#   bash experiments/custom.sh [hydra overrides for every run, e.g. hydra/launcher=local
#        hydra.launcher.n_jobs=3 torch_threads=1 (3 runs at a time), or at real scale
#        data.root=/data/dreambooth/dataset data.name=dog,backpack,clock backbone=sd15 train=paper]
# Outputs: outputs/runs/custom*/..., outputs/results/custom.csv, outputs/analysis/custom/
# (table7.md, fig14_custom.png, table7_claims.md)
PREFLIGHT=(
  "sara.customisation_checks check"   # real scale: one line naming missing SD weights / CLIP ViT-L/14
)
SWEEPS=(
  "+experiment=custom"                                                   # LoRA, AdaptFormer, LT-SFT, SaRA
  "+experiment=custom method=full budget=none"                           # DreamBooth (full fine-tuning; its settings: conf/experiment_method/custom/full.yaml)
  "+experiment=custom method=textual_inversion budget=none"
  "+experiment=custom method=full budget=none train.steps=0 experiment_name=custom--base"
)
ANALYSES=(
  "table7_custom --root outputs/runs"
)
source "$(dirname "$0")/run_experiment.sh"
