#!/usr/bin/env bash
# `make lab`: host tools, base image (docker provider), `vagrant up --provision`, smoke check.
# Re-running it on a running lab re-provisions (every provision script is idempotent).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."

say() { echo "lab: $*"; }

"$HERE/vagrant.sh"
provider="$("$HERE/lab-provider.sh")"
export LAB_PROVIDER="$provider"
say "provider: $provider"
if [[ "$provider" == docker ]]; then
    "$HERE/docker-engine.sh"
    "$HERE/base-image.sh"
fi

started=$SECONDS
say "vagrant up (first time: packages are installed in both machines, a few minutes)"
vagrant up --provider="$provider" --provision
say "machines up and provisioned in $((SECONDS - started)) s"
"$HERE/lab-smoke.sh"
