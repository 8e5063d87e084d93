#!/usr/bin/env bash
# The lab end to end, as `make test` runs it: make lab -> testinfra -> idempotence (vagrant
# provision changes nothing) -> fab deploy/rollback/scale under load -> (fault drills, with
# LAB_SUITE_DRILLS=1) -> destroy.
#
# When the lab cannot run on this machine (Vagrant cannot be installed, no Docker engine can
# start for the docker provider) this FAILS with the reason in one line, unless the user allows
# the skip explicitly with ALLOW_SKIP_LAB=1 (then it says SKIPPED and why, and exits 0). CI never
# allows it (.ci/run). Under tests/layers.sh the outcome is also written to $LAYER_NOTE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
MAKE="${MAKE:-make}"

SUITE="lab suite"
# shellcheck source=provision/host/suite.sh
source "$HERE/suite.sh"

prepare "$HERE/vagrant.sh"
# The single box (the cluster has its own suite); a lab of the other topology left running is refused.
running="$(cat .vagrant/lab-topology 2>/dev/null || true)"
[[ -z "$running" || "$running" == app ]] \
    || cannot_run "a lab of the $running topology is running here: make lab-destroy first"
export LAB_TOPOLOGY=app
provider="$("$HERE/lab-provider.sh")"
if [[ "$provider" == docker ]]; then
    prepare "$HERE/docker-engine.sh"
fi

# Always leave the machine as we found it (the base image and the artifact cache stay).
trap 'echo "lab suite: destroying the lab"; "$MAKE" --no-print-directory lab-destroy >/dev/null 2>&1 || true' EXIT

t0=$SECONDS
# The infra tests that need no lab machine (`nolab`: the Vagrantfile, the VM preflight) run while
# the lab boots, into their own log, shown when both are done; the others after.
files_log="$(mktemp)"
"$MAKE" --no-print-directory lab-files-test >"$files_log" 2>&1 &
files_pid=$!
lab_rc=0
"$MAKE" --no-print-directory lab || lab_rc=$?
t1=$SECONDS
if ((lab_rc != 0)); then
    wait "$files_pid" || true  # bounded (a minute or two); nothing left running behind this suite
    rm -f "$files_log"
    exit "$lab_rc"
fi
files_rc=0
wait "$files_pid" || files_rc=$?
t_files=$((SECONDS - t0))
echo "lab suite: the infra tests that need no lab (run while it booted):"
cat "$files_log"
rm -f "$files_log"
((files_rc == 0)) || { echo "lab suite: make lab-files-test failed (above)" >&2; exit 1; }
"$MAKE" --no-print-directory infra-test INFRA_MARKS="not reprovision and not deploy and not nolab"
t2=$SECONDS
"$MAKE" --no-print-directory lab-idempotence
t3=$SECONDS
"$MAKE" --no-print-directory lab-deploy-test
t4=$SECONDS
# The single box's drills (`make drills LAB=1`) are left to the cluster suite that follows, which
# drills the same machinery (supervisor, init scripts, nginx, the app's env) and the cluster's own
# faults; the local drills (an earlier layer) run this fault plan on the same code. Set
# LAB_SUITE_DRILLS=1 to run them here too (~5 min; make test stays under 45 min without them).
drills="not run (LAB_SUITE_DRILLS=1 runs them)"
if [[ "${LAB_SUITE_DRILLS:-0}" == 1 ]]; then
    "$MAKE" --no-print-directory drills LAB=1
    drills="$((SECONDS - t4)) s"
fi
summary="make lab $((t1 - t0)) s (with the lab-less infra tests: ${t_files} s), infra tests $((t2 - t1)) s, re-provision check $((t3 - t2)) s,\
 deploy/rollback/scale under load $((t4 - t3)) s, fault drills $drills"
echo "lab suite: $summary"
note "ran, passed ($provider provider: $summary)"
