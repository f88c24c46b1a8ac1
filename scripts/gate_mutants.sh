#!/usr/bin/env bash
# Does the CI gate fail when something breaks? Runs the gate against injected regressions (benchmark/mutants.py,
# switched on by SYNTHVID_MUTANT, which exists only for this) and prints, per mutant, which bounds caught it.
#   1. the unmodified gate (scripts/ci_gate.sh, seed 0): it must pass;
#   2. each mutant in a fresh store and cache of its own, running only the generators it touches (plus real,
#      the yardstick of stage times), then `check --generator ...` on those; it must FAIL on some bound.
# Exit 0 when the unmodified gate passes and every mutant is caught, else 1.
#   GATE_MUTANTS="shifted-masks random-links"   a subset (default: all four)
#   GATE_MUTANTS_SKIP_BASELINE=1                 skip step 1 (e.g. when the gate just ran)
#   GATE_MUTANTS_DIR=.gate-mutants               where the stores go
#   GATE_MUTANTS_THRESHOLDS=FILE                 bounds to check against (default: benchmark/thresholds.toml)
# Cost on 2 cores: the unmodified gate (~30 min) plus ~6 min (real) + the touched generator's row per mutant.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${GATE_MUTANTS_DIR:-.gate-mutants}
MUTANTS=${GATE_MUTANTS:-"bvdm-no-flow shifted-masks swapped-intensity-map random-links"}
declare -A TOUCHES=([bvdm-no-flow]="real bvdm" [shifted-masks]="real" [swapped-intensity-map]="real mitogen"
                    [random-links]="real")
mkdir -p "$ROOT"
BOUNDS=()
[ -n "${GATE_MUTANTS_THRESHOLDS:-}" ] && BOUNDS=(--thresholds "$GATE_MUTANTS_THRESHOLDS")
status=0
summary=()

if [ "${GATE_MUTANTS_SKIP_BASELINE:-0}" != 1 ]; then
  if CI_GATE_DIR="$ROOT/unmodified" bash scripts/ci_gate.sh "${BOUNDS[@]}" > "$ROOT/unmodified.log" 2>&1; then
    summary+=("unmodified|passed|-")
  else
    summary+=("unmodified|FAILED (the gate must pass without a mutant: $ROOT/unmodified.log)|-")
    status=1
  fi
fi

for mutant in $MUTANTS; do
  generators=${TOUCHES[$mutant]:?unknown mutant $mutant (known: ${!TOUCHES[*]})}
  selection=()
  for generator in $generators; do selection+=(--generator "$generator"); done
  log="$ROOT/$mutant.log"
  if SYNTHVID_MUTANT="$mutant" CI_GATE_DIR="$ROOT/$mutant" CI_GATE_GENERATORS="$generators" \
      bash scripts/ci_gate.sh "${selection[@]}" "${BOUNDS[@]}" > "$log" 2>&1; then
    summary+=("$mutant|NOT CAUGHT: every bound passed|-")
    status=1
    continue
  fi
  # the check table's FAIL rows: columns dataset generator machine metric op bound measured diff status run
  caught=$(awk 'NF > 1 && $(NF-1) == "FAIL" {printf "%s%s %s (%s %s %s, measured %s)", sep, $2, $4, $5, $6, $8, $7; sep="; "}' "$log")
  if [ -z "$caught" ]; then
    summary+=("$mutant|NOT CAUGHT: the run failed without a violated bound (see $log)|-")
    status=1
  else
    summary+=("$mutant|caught|$caught")
  fi
done

printf '\n| mutant | verdict | bounds that caught it (generator metric (bound, diff, measured)) |\n|---|---|---|\n'
for line in "${summary[@]}"; do
  IFS='|' read -r name verdict bounds <<< "$line"
  printf '| %s | %s | %s |\n' "$name" "$verdict" "$bounds"
done
exit $status
