#!/usr/bin/env bash
# The one body every experiment shares: its sweeps (a finished run is skipped, a failed one is
# recorded in its failed.json and the rest go on), then its results table, then its figures/tables.
#
# An experiment `experiments/<name>.sh` states only what is its own, then sources this file:
#   SWEEPS=("+experiment=<name> [overrides]" ...)   # one `python run.py -m ...` per entry
#   ANALYSES=("<analysis module> [its options]" ...)  # one `python -m analysis.<module> ...` per entry
#   RESULTS_OF=<experiment id>                        # optional: the runs to collect (default: <name>)
#   PREFLIGHT=("<module> [options]" ...)               # optional: `python -m <module> ... <overrides>`
#                                                     # before any run; a failure stops the experiment
#   REFINE=<module>                                   # optional: after the sweeps, `python -m <module>
#                                                     # --results <table> --next` prints further sweeps
#                                                     # (one line of overrides each), e.g. a rate grid
#                                                     # widened where its best rate is at an edge; they
#                                                     # run, the table is recollected, and it is asked
#                                                     # again, up to REFINE_ROUNDS (default 3) rounds
# and writes outputs/runs/<id>*/..., outputs/results/<name>.csv and outputs/analysis/<name>/.
# The command-line arguments (hydra overrides) go to every `run.py` call.
#
#   bash experiments/<name>.sh [hydra overrides]
#   bash experiments/run_experiment.sh <name> [hydra overrides]      # the same
#   EXPERIMENT_DRY_RUN=1 bash experiments/<name>.sh [...]            # print the commands, run nothing
# Exit status: that of the last failing step (0 when every step succeeded).
set -uo pipefail

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # run directly: NAME picks the experiment
  here=$(dirname "$0")
  if [[ $# -lt 1 || ! -f "$here/$1.sh" || "$1" == run_experiment ]]; then
    specs=$(grep -l "run_experiment.sh" "$here"/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -vx run_experiment)
    echo "usage: bash experiments/run_experiment.sh NAME [hydra overrides]; NAME is one of:" $specs >&2
    exit 2
  fi
  name=$1
  shift
  exec bash "$here/$name.sh" "$@"
fi

name=$(basename "$0" .sh)
if [[ ! -v SWEEPS ]]; then
  echo "$0: set SWEEPS (the run.py -m overrides of each sweep) before sourcing run_experiment.sh" >&2
  exit 2
fi
[[ -v ANALYSES ]] || ANALYSES=()  # an experiment may only collect its results table
cd "$(dirname "$0")/.." || exit
table=outputs/results/$name.csv
out=outputs/analysis/$name
status=0

step() {
  if [[ -n "${EXPERIMENT_DRY_RUN:-}" ]]; then
    echo "$*"
  else
    "$@" || status=$?
  fi
}

[[ -v PREFLIGHT ]] || PREFLIGHT=()
for check in "${PREFLIGHT[@]}"; do  # e.g. weights a real-scale run needs: one line, then stop
  read -ra words <<< "$check"
  if [[ -n "${EXPERIMENT_DRY_RUN:-}" ]]; then
    echo python -m "${words[@]}" "$@"
  else
    python -m "${words[@]}" "$@" || exit 1
  fi
done
for sweep in "${SWEEPS[@]}"; do
  read -ra overrides <<< "$sweep"
  step python run.py -m "${overrides[@]}" "$@"
done
step python -m sara.results --root outputs/runs --experiment "${RESULTS_OF:-$name}" --csv "$table"
if [[ -n "${REFINE:-}" ]]; then
  backbone=$(printf '%s\n' "$@" | sed -n 's/^backbone=//p' | tail -n 1)
  ask=(python -m "$REFINE" --results "$table" --next ${backbone:+--backbone "$backbone"})
  for ((round = 1; round <= ${REFINE_ROUNDS:-3}; round++)); do
    if [[ -n "${EXPERIMENT_DRY_RUN:-}" ]]; then
      echo "${ask[*]}  # then python run.py -m <each printed line> $*, up to ${REFINE_ROUNDS:-3} rounds"; break
    fi
    more=$("${ask[@]}") || { status=1; break; }
    [[ -n $more ]] || break
    mapfile -t sweeps <<< "$more"
    for sweep in "${sweeps[@]}"; do
      read -ra overrides <<< "$sweep"
      step python run.py -m "${overrides[@]}" "$@"
    done
    step python -m sara.results --root outputs/runs --experiment "${RESULTS_OF:-$name}" --csv "$table"
  done
fi
for analysis in "${ANALYSES[@]}"; do
  read -ra words <<< "$analysis"
  step python -m "analysis.${words[0]}" --results "$table" --out "$out" "${words[@]:1}"
done
exit $status
