#!/usr/bin/env bash
# Each method's own learning rate: method × budget × 5 rates on the tuning style set, scored on the
# validation prompts; then the per-backbone table that `train.lr=tuned` reads.
#   bash experiments/lr_search.sh [hydra overrides for every run, e.g. backbone=sd15 seed=0,1,2]
# Outputs: outputs/runs/lr_search*/..., outputs/results/lr_search.csv, results/lr/<backbone>.yaml
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python run.py -m +experiment=lr_search "$@" || status=$?
python run.py -m +experiment=lr_search method=full budget=none "$@" || status=$?
python -m sara.results --root outputs/runs --experiment lr_search --csv outputs/results/lr_search.csv || status=$?
backbone=$(printf '%s\n' "$@" | sed -n 's/^backbone=//p' | tail -1)
python -m sara.lr_search --root outputs/runs --backbone "${backbone:-tiny}" || status=$?
exit $status
