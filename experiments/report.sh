#!/usr/bin/env bash
# Every figure and table from the runs that exist now (no training): the results table, each
# analysis script, the comparison with the paper, the claims report and the audit of the paper's
# VLHI cells. Experiments not run yet get a "No results yet" note instead of a figure.
#   bash experiments/report.sh [RUNS_ROOT] [OUT_DIR]      # defaults: outputs/runs outputs/analysis
# The results table is written to OUT_DIR/results.csv (+ results_failed.csv).
set -uo pipefail
cd "$(dirname "$0")/.."
root=${1:-outputs/runs}
out=${2:-outputs/analysis}
table="$out/results.csv"
status=0
python -m sara.results --root "$root" --csv "$table" || exit $?
run() { python "$@" || status=$?; }
run analysis/fig2_pruning.py          --results "$table" --out "$out/pruning"
run analysis/fig3_migration.py        --results "$table" --out "$out/migration"
run analysis/fig6_backbone.py         --results "$table" --out "$out/backbone"
run analysis/table1_style.py          --results "$table" --out "$out/style" --methods full,lora,adaptformer,lt_sft,sara
run analysis/style_samples.py         --results "$table" --out "$out/style" --budget 50M --methods full,lora,adaptformer,lt_sft,sara
run analysis/table1_style.py          --results "$table" --out "$out/style" --name table4_style --methods full,lora,dora,adaptformer,lt_sft,diffpruning,sara
run analysis/table1_style.py          --results "$table" --out "$out/style" --quality bvqa --name table6_bvqa --methods full,dora,lora,adaptformer,lt_sft,sara
run analysis/table2_ablation.py       --results "$table" --out "$out/ablation"
run analysis/table9_rank.py           --results "$table" --out "$out/ablation"
run analysis/table8_threshold.py      --results "$table" --out "$out/threshold"
run analysis/fig21_24_hyper.py        --results "$table" --out "$out/hyper"
run analysis/fig16_scaling.py         --results "$table" --out "$out/scaling"
run analysis/seed_spread.py          --results "$table" --out "$out/seeds"
run analysis/fig17_merging.py         --results "$table" --out "$out/merging"
run analysis/fig19_subspace.py        --results "$table" --out "$out/analysis"
run analysis/table10_amplification.py --results "$table" --out "$out/analysis"
run analysis/compare_paper.py         --results "$table" --out "$out/compare"
run analysis/claims.py                --results "$table" --out "$out/claims"
run analysis/audit_paper_vlhi.py      --out "$out/audit"
exit $status
