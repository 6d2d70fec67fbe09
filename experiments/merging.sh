#!/usr/bin/env bash
# Experiment `merging` (paper Fig. 17, App. G; needs the style runs (sara, 50M)). One command: runs (a finished run is skipped, a failed one is recorded in
# its failed.json and the rest go on), then the results table, then the figures/tables.
#   bash experiments/merging.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/merging*/..., outputs/results/merging.csv, outputs/analysis/merging/
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
# the paper's four pairs, then BarbieCore + Expedition: the two styles the tiny backbone learns (README)
for pair in BarbieCore:Cyberpunk Cyberpunk:ElementFire ElementFire:Expedition Hornify:Cyberpunk BarbieCore:Expedition; do
  a=${pair%%:*}; b=${pair##*:}
  python run.py -m +experiment=merging data.name=$a delta.merge_with=$b "$@" || status=$?
  python run.py -m +experiment=merging data.name=$b delta.merge_with=$a "$@" || status=$?
  # and the average of the two deltas (β1 = β2 = 0.5): the β = 1 sum over-scales the update (README)
  python run.py -m +experiment=merging data.name=$a delta.merge_with=$b delta.beta1=0.5 delta.beta2=0.5 "$@" || status=$?
  python run.py -m +experiment=merging data.name=$b delta.merge_with=$a delta.beta1=0.5 delta.beta2=0.5 "$@" || status=$?
done
python -m sara.results --root outputs/runs --experiment merging --csv outputs/results/merging.csv || status=$?
python analysis/fig17_merging.py --results outputs/results/merging.csv --out outputs/analysis/merging || status=$?
exit $status
