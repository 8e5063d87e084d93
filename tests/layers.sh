#!/usr/bin/env bash
# `make test`: every layer in order, each timed, then a summary that names each layer and
# whether it ran. The first failing layer stops the run (the summary says which did not run).
# A layer may write one line about itself to $LAYER_NOTE (the lab suite says SKIPPED and why).
set -uo pipefail

MAKE="${MAKE:-make}"
notes="$(mktemp -d)"
trap 'rm -rf "$notes"' EXIT

# name|make target
LAYERS=(
    "lint|lint"
    "unit + integration tests|unit-integration"
    "fault drills, local stack|drills"
    "lab suite (infra, idempotence, deploy)|lab-suite"
    "cluster suite (roles, rolling deploy, idempotence)|cluster-suite"
    "Docker container (build, run, stop, dev variant)|container-test"
)

rows=()
failed=""
for layer in "${LAYERS[@]}"; do
    name="${layer%%|*}"
    target="${layer#*|}"
    if [[ -n "$failed" ]]; then
        rows+=("$name|not run ($failed failed)")
        continue
    fi
    echo "== make test: $name"
    started=$SECONDS
    note="$notes/$target"
    if LAYER_NOTE="$note" "$MAKE" --no-print-directory "$target"; then
        rows+=("$name|$(cat "$note" 2>/dev/null || echo "ran, passed") [$((SECONDS - started)) s]")
    else
        rows+=("$name|FAILED: $(cat "$note" 2>/dev/null || echo "see above") [$((SECONDS - started)) s]")
        failed="$name"
    fi
done

echo
echo "make test summary:"
for row in "${rows[@]}"; do
    printf '  %-52s %s\n' "${row%%|*}" "${row#*|}"
done
if [[ -n "$failed" ]]; then
    echo "make test: FAILED ($failed)"
    exit 1
fi
echo "make test: passed"
