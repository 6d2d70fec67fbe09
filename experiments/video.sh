#!/usr/bin/env bash
# Experiment `video` (paper App. E, Fig. 15), run by experiments/run_experiment.sh: the motion
# modules of the tiny text-to-video model fine-tuned on Zoom In / Zoom Out / Pan Right clips with
# full, LoRA, AdaptFormer, LT-SFT and SaRA (restricted to the motion modules, budget-matched there);
# the motion prior without fine-tuning as the reference rows (variant `prior`); then the metrics
# table and the frame-strip grids.
#   bash experiments/video.sh [hydra overrides for every run, e.g. hydra/launcher=local torch_threads=1]
# Outputs: outputs/runs/video*/..., outputs/results/video.csv, outputs/analysis/video/
# (video_table.md, video_grid_<motion>.png)
SWEEPS=(
  "+experiment=video"
  "+experiment=video experiment_name=video--prior method=full budget=none train.steps=0"
)
ANALYSES=(
  "video_table --root outputs/runs"
)
source "$(dirname "$0")/run_experiment.sh"
