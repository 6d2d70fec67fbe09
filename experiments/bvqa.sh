#!/usr/bin/env bash
# Experiment `bvqa` (paper Tables 4 and 6: DoRA and DiffPruning added to the style runs; B-VQA). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/bvqa.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/bvqa*/..., outputs/results/bvqa.csv, outputs/analysis/bvqa/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=bvqa "$@" || status=$?
python -m sara.results --root outputs/runs --experiment style --csv outputs/results/bvqa.csv || status=$?
python analysis/table1_style.py --results outputs/results/bvqa.csv --out outputs/analysis/bvqa --name table4_style --methods full,lora,dora,adaptformer,lt_sft,diffpruning,sara || status=$?
python analysis/table1_style.py --results outputs/results/bvqa.csv --out outputs/analysis/bvqa --quality bvqa --name table6_bvqa --methods full,dora,lora,adaptformer,lt_sft,sara || status=$?
exit $status
