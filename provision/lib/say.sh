#!/usr/bin/env bash
# say / die: the one definition for every script of the project (guest provisioning, host tools,
# the container's PID 1, `make run`). Sourced, never run. The sourcing script may set SAY_PREFIX
# first (host tools: "lab:", "kafka-local[9092]:"); the default is "[its name]", as provisioning logs.
#   say MESSAGE    one line on stdout
#   die MESSAGE    one line on stderr ("<prefix> error: MESSAGE"), exit 1

say() { echo "${SAY_PREFIX:-[$(basename "$0" .sh)]} $*"; }
die() { echo "${SAY_PREFIX:-[$(basename "$0" .sh)]} error: $*" >&2; exit 1; }
