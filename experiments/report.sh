#!/usr/bin/env bash
# Every figure and table from the committed results table (no training): each analysis module,
# the comparison with the paper, the claims report and the audit of the paper's VLHI cells.
# Experiments with no runs get a "No results yet" note instead of a figure.
#   bash experiments/report.sh                         # results/embedded/runs.csv -> outputs/analysis
#   bash experiments/report.sh --collect outputs/runs  # first add the finished runs under that root to the table
#   bash experiments/report.sh --write-docs            # also refresh the docs' generated tables, claims.json
#                                                      # and the tuned learning rates (results/lr/<backbone>.yaml)
#   bash experiments/report.sh --check                 # exit 1 if a committed docs table, claims.json or rate table differs
#                                                      # from its regeneration (nothing is written)
#   bash experiments/report.sh --results T.csv --out DIR   # another table / output folder
set -uo pipefail
cd "$(dirname "$0")/.."
table=results/embedded/runs.csv
claims_json=results/embedded/claims.json
docs=(docs/results.md docs/claims.md docs/customisation.md)
doc_figures=("learnability/learnability_samples.png docs/img/learnability_samples.png"  # "made docs-copy"
             "learnability/learnability_steps.png docs/img/learnability_steps.png"
             "lr_search/lr_search_samples.png docs/img/lr_search_samples.png"
             "lr_search/lr_search_samples_5M.png docs/img/lr_search_samples_5M.png"
             "lr_search/lr_search_samples_20M.png docs/img/lr_search_samples_20M.png"
             "style/style_samples.png docs/img/style_samples.png"
             "style/style_samples_5M.png docs/img/style_samples_5M.png"
             "style/style_samples_20M.png docs/img/style_samples_20M.png"
             "pruning/fig2_pruning.png docs/img/fig2_pruning.png"
             "migration/fig3_migration.png docs/img/fig3_migration.png"
             "ablation/table2_ablation.png docs/img/table2_ablation.png"
             "scaling/fig16_scaling.png docs/img/fig16_scaling.png"
             "merging/fig17_merging.png docs/img/fig17_merging.png"
             "analysis/fig19_subspace.png docs/img/fig19_subspace.png"
             "backbone/fig6_backbone.png docs/img/fig6_backbone.png")
# committed copies of whole analysis files: the claims and the rates train.lr=tuned reads
copies=("claims/claims.json:$claims_json" "lr_search/tables:results/lr")
out=outputs/analysis
collect="" mode=""
while (( $# )); do
  case "$1" in
    --collect) collect=${2:?--collect needs a runs root}; shift 2 ;;
    --write-docs|--check) mode=$1; shift ;;
    --results) table=${2:?--results needs a CSV}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    *) echo "report.sh: unknown argument $1 (see the header of experiments/report.sh)" >&2; exit 2 ;;
  esac
done
if [[ -n $collect ]]; then
  [[ $mode == --check ]] && { echo "report.sh: --check compares, it does not collect" >&2; exit 2; }
  python -m sara.results --root "$collect" --csv "$table" --merge || exit $?
fi
[[ -f $table ]] || { echo "report.sh: no results table at $table (make it: bash experiments/report.sh --collect outputs/runs)" >&2; exit 2; }
if [[ $mode == --check ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
status=0
mkdir -p "$out" && started="$out/.report_started" && touch "$started"  # figures older than this are another run's
run() { python -m "analysis.$1" "${@:2}" || status=$?; }  # run MODULE [options]
run learnability          --results "$table" --out "$out/learnability"
run lr_table              --results "$table" --out "$out/lr_search" --tables "$out/lr_search/tables"
run fig2_pruning          --results "$table" --out "$out/pruning"
run fig3_migration        --results "$table" --out "$out/migration"
run fig6_backbone         --results "$table" --out "$out/backbone"
run style_samples         --results "$table" --out "$out/style" --budget 50M --methods full,lora,adaptformer,lt_sft,sara
for b in 5M 20M; do  # Table 1's smaller budgets: the paper's PEFT methods
  run style_samples       --results "$table" --out "$out/style" --budget $b --methods lora,adaptformer,lt_sft,sara --name style_samples_$b
done
run table1_style          --results "$table" --out "$out/style"  # Table 1; below, the other presets of its TABLES
run table1_style          --results "$table" --out "$out/style" --name table1_peers
run table1_style          --results "$table" --out "$out/style" --name table4_style
run table1_style          --results "$table" --out "$out/style" --name table6_bvqa
run table2_ablation       --results "$table" --out "$out/ablation"
run table9_rank           --results "$table" --out "$out/ablation"
run table8_threshold      --results "$table" --out "$out/threshold"
run fig21_24_hyper        --results "$table" --out "$out/hyper"
run fig16_scaling         --results "$table" --out "$out/scaling"
run seed_spread           --results "$table" --out "$out/seeds"
run table7_custom         --results "$table" --out "$out/custom"
run custom_settings       --results "$table" --out "$out/custom"
run subject_validation    --json results/embedded/subject_validation.json --out "$out/custom"
run fid_noise             --json results/embedded/fid_noise.json --out "$out/fid_noise"
run fig17_merging         --results "$table" --out "$out/merging"
run fig19_subspace        --results "$table" --out "$out/analysis"
run table10_amplification --results "$table" --out "$out/analysis"
run compare_paper         --results "$table" --out "$out/compare"
run claims                --results "$table" --out "$out/claims"
run audit_paper_vlhi      --out "$out/audit"
case $mode in
  --write-docs)
    python -m analysis.docs_tables --analysis "$out" --docs "${docs[@]}" --copies "${copies[@]}" --write || status=$?
    for fig in "${doc_figures[@]}"; do  # sample grids need the runs' sample folders: copied where made now
      read -r made dest <<< "$fig"
      [[ $out/$made -nt $started ]] && { cp "$out/$made" "$dest" || status=$?; }
    done
    ;;
  --check)
    python -m analysis.docs_tables --analysis "$out" --docs "${docs[@]}" --copies "${copies[@]}" --check || status=1 ;;
esac
exit $status
