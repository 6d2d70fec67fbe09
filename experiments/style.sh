#!/usr/bin/env bash
# Experiment `style` (paper Tables 1, 4, 5; Table 6 with bvqa.sh). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/style.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/style*/..., outputs/results/style.csv, outputs/analysis/style/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=style "$@" || status=$?
python run.py -m +experiment=style method=full budget=none "$@" || status=$?
python -m sara.results --root outputs/runs --experiment style --csv outputs/results/style.csv || status=$?
python analysis/table1_style.py --results outputs/results/style.csv --out outputs/analysis/style --methods full,lora,adaptformer,lt_sft,sara || status=$?
python analysis/style_samples.py --results outputs/results/style.csv --out outputs/analysis/style --budget 50M --n 6 --tile 44 --methods full,lora,adaptformer,lt_sft,sara || status=$?
exit $status
