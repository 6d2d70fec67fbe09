#!/usr/bin/env bash
# Experiment `merging` (paper Fig. 17, App. G; needs the style runs (sara, 50M)), run by experiments/run_experiment.sh:
#   bash experiments/merging.sh [hydra overrides for every run, e.g. backbone=sd15 train=paper hydra/launcher=local]
# Outputs: outputs/runs/merging*/..., outputs/results/merging.csv, outputs/analysis/merging/
SWEEPS=()
# the paper's four pairs, then BarbieCore + Expedition: the two styles the tiny backbone learns (docs/results.md)
for pair in BarbieCore:Cyberpunk Cyberpunk:ElementFire ElementFire:Expedition Hornify:Cyberpunk BarbieCore:Expedition; do
  a=${pair%%:*}; b=${pair##*:}
  SWEEPS+=("+experiment=merging data.name=$a delta.merge_with=$b"
           "+experiment=merging data.name=$b delta.merge_with=$a")
  # and the average of the two deltas (β1 = β2 = 0.5): the β = 1 sum over-scales the update (docs/results.md)
  SWEEPS+=("+experiment=merging data.name=$a delta.merge_with=$b delta.beta1=0.5 delta.beta2=0.5"
           "+experiment=merging data.name=$b delta.merge_with=$a delta.beta1=0.5 delta.beta2=0.5")
done
ANALYSES=(
  "fig17_merging"
)
source "$(dirname "$0")/run_experiment.sh"
