#!/usr/bin/env bash
# Shared by the lab suites (lab-suite.sh, cluster-suite.sh): sourced, never run. The sourcing
# script sets SUITE (its name in messages) first. Under tests/layers.sh a suite's outcome is also
# written to $LAYER_NOTE.

note() {
    if [[ -n "${LAYER_NOTE:-}" ]]; then printf '%s\n' "$1" >"$LAYER_NOTE"; fi
}

# $1: a one-line reason the lab cannot run here. FAILS, unless ALLOW_SKIP_LAB=1 (then SKIPPED, exit 0).
cannot_run() {
    if [[ "${ALLOW_SKIP_LAB:-0}" == 1 ]]; then
        echo "$SUITE: SKIPPED (ALLOW_SKIP_LAB=1): $1"
        note "SKIPPED (ALLOW_SKIP_LAB=1): $1"
        exit 0
    fi
    echo "$SUITE: cannot run here: $1 (ALLOW_SKIP_LAB=1 lets make test pass without the lab)" >&2
    note "CANNOT RUN: $1"
    exit 1
}

# Run a host-preparation step; on failure its last output line is the reason the lab cannot run.
prepare() {
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out"
        cannot_run "$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"
    fi
    printf '%s\n' "$out"
}
