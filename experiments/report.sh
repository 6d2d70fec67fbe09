#!/usr/bin/env bash
# Every figure and table from the runs that exist now (no training): the results table, each
# analysis module, the comparison with the paper, the claims report and the audit of the paper's
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
run() { python -m "analysis.$1" "${@:2}" || status=$?; }  # run MODULE [options]
run fig2_pruning          --results "$table" --out "$out/pruning"
run fig3_migration        --results "$table" --out "$out/migration"
run fig6_backbone         --results "$table" --out "$out/backbone"
run table1_style          --results "$table" --out "$out/style" --methods full,lora,adaptformer,lt_sft,sara
run style_samples         --results "$table" --out "$out/style" --budget 50M --methods full,lora,adaptformer,lt_sft,sara
run table1_style          --results "$table" --out "$out/style" --name table4_style --methods full,lora,dora,adaptformer,lt_sft,diffpruning,sara
run table1_style          --results "$table" --out "$out/style" --quality bvqa --name table6_bvqa --methods full,dora,lora,adaptformer,lt_sft,sara
run table2_ablation       --results "$table" --out "$out/ablation"
run table9_rank           --results "$table" --out "$out/ablation"
run table8_threshold      --results "$table" --out "$out/threshold"
run fig21_24_hyper        --results "$table" --out "$out/hyper"
run fig16_scaling         --results "$table" --out "$out/scaling"
run seed_spread           --results "$table" --out "$out/seeds"
run fig17_merging         --results "$table" --out "$out/merging"
run fig19_subspace        --results "$table" --out "$out/analysis"
run table10_amplification --results "$table" --out "$out/analysis"
run compare_paper         --results "$table" --out "$out/compare"
run claims                --results "$table" --out "$out/claims"
run audit_paper_vlhi      --out "$out/audit"
exit $status
