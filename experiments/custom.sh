#!/usr/bin/env bash
# Experiment `custom` (paper Table 7, Fig. 14, App. D): DreamBooth with prior preservation for full
# fine-tuning and four PEFT methods at one budget, and Textual Inversion, on three subjects; the
# pre-trained model sampled with the same prompts. One command: runs (a finished run is skipped, a
# failed one is recorded in its failed.json and the rest go on), then Table 7, the sample grid and
# Table 7's claims.
#   bash experiments/custom.sh [hydra overrides for every run, e.g. hydra/launcher=local
#        hydra.launcher.n_jobs=3 torch_threads=1 (3 runs at a time), or at real scale
#        data.root=/data/dreambooth/dataset data.name=dog,backpack,clock backbone=sd15 train=paper]
# Outputs: outputs/runs/custom*/..., outputs/analysis/custom/ (table7.md, fig14_custom.png,
# table7_claims.md)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
# real scale: say in one line what is missing (SD weights, CLIP ViT-L/14) instead of failing later
backbone=tiny
for a in "$@"; do case $a in backbone=*) backbone=${a#backbone=};; esac; done
if [ "$backbone" != tiny ]; then
  python -m sara.customisation check backbone="$backbone" evaluators=real || exit 1
fi
python run.py -m +experiment=custom "$@" || status=$?                                  # LoRA, AdaptFormer, LT-SFT, SaRA
# DreamBooth (full fine-tuning): twice the tiny model's default rate for the short schedule
python run.py -m +experiment=custom method=full budget=none train.lr=2e-4 "$@" || status=$?
python run.py -m +experiment=custom method=textual_inversion budget=none "$@" || status=$?
python run.py -m +experiment=custom method=full budget=none train.steps=0 experiment_name=custom--base "$@" || status=$?
python -m analysis.table7_custom --root outputs/runs --out outputs/analysis/custom || status=$?
exit $status
