#!/usr/bin/env bash
# The lab end to end, as `make test` runs it: make lab -> testinfra -> idempotence (vagrant
# provision changes nothing) -> fab deploy/rollback/scale under load -> fault drills -> destroy. Skipped (exit 0, one line) with SKIP_LAB=1, or when the
# docker provider is chosen and no Docker engine can run on this machine.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
MAKE="${MAKE:-make}"

if [[ "${SKIP_LAB:-0}" == 1 ]]; then
    echo "lab suite: skipped (SKIP_LAB=1)"
    exit 0
fi
"$HERE/vagrant.sh"
provider="$("$HERE/lab-provider.sh")"
if [[ "$provider" == docker ]] && ! "$HERE/docker-engine.sh"; then
    echo "lab suite: skipped: no Docker engine can run on this machine"
    exit 0
fi

# Always leave the machine as we found it (the base image and the artifact cache stay).
trap 'echo "lab suite: destroying the lab"; vagrant destroy -f >/dev/null 2>&1 || true' EXIT

t0=$SECONDS
"$MAKE" --no-print-directory lab
t1=$SECONDS
"$MAKE" --no-print-directory infra-test
t2=$SECONDS
"$MAKE" --no-print-directory lab-idempotence
t3=$SECONDS
"$MAKE" --no-print-directory lab-deploy-test
t4=$SECONDS
"$MAKE" --no-print-directory drills LAB=1
t5=$SECONDS
echo "lab suite: make lab $((t1 - t0)) s, infra tests $((t2 - t1)) s, re-provision check $((t3 - t2)) s," \
    "deploy/rollback/scale under load $((t4 - t3)) s, fault drills $((t5 - t4)) s"
