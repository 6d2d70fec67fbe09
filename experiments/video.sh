#!/usr/bin/env bash
# Experiment `video` (paper App. E, Fig. 15): the motion modules of the tiny text-to-video model
# fine-tuned on Zoom In / Zoom Out / Pan Right clips with full, LoRA, AdaptFormer, LT-SFT and SaRA
# (restricted to the motion modules, budget-matched there); the motion prior without fine-tuning
# as the reference rows (variant `prior`); then the metrics table and the frame-strip grids.
#   bash experiments/video.sh [hydra overrides for every run, e.g. hydra/launcher=local torch_threads=1]
# Outputs: outputs/runs/video*/..., outputs/analysis/video/ (video_table.md, video_grid_<motion>.png)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=video "$@" || status=$?
python run.py -m +experiment=video experiment_name=video--prior method=full budget=none train.steps=0 "$@" || status=$?
python -m analysis.video_table --root outputs/runs --experiment video --out outputs/analysis/video || status=$?
exit $status
