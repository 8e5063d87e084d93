#!/usr/bin/env bash
# `make lab`: host tools, base image (docker provider), `vagrant up --provision`, smoke check.
# Re-running it on a running lab re-provisions (every provision script is idempotent).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."

SAY_PREFIX="lab:"
# shellcheck source=provision/lib/say.sh
source "$HERE/../lib/say.sh"

"$HERE/vagrant.sh"
provider="$("$HERE/lab-provider.sh")"
export LAB_PROVIDER="$provider"
say "provider: $provider"
if [[ "$provider" == docker ]]; then
    "$HERE/docker-engine.sh"
    "$HERE/base-image.sh"
else
    # Real VMs: VirtualBox/Vagrant versions, host-only range, memory, what CentOS 6 cannot fetch
    # itself - each refused in one line before anything boots.
    python3 "$HERE/vm-preflight.py" "$provider"
fi

# The machines trust what this host trusts beyond the distro's CAs (e.g. a TLS-inspecting proxy).
cache="${ARTIFACT_CACHE:-$PWD/.cache/artifacts}/ca-certificates"
mkdir -p "$cache"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    for crt in /usr/local/share/ca-certificates/*.crt; do
        cmp -s "$crt" "$cache/$(basename "$crt")" || cp "$crt" "$cache/"
    done
fi

started=$SECONDS
say "vagrant up (first time: packages are installed in both machines, a few minutes)"
# One machine at a time, sidecar first: the app's provisioning needs its database and Kafka.
vagrant up --provider="$provider" --provision --no-parallel
say "machines up and provisioned in $((SECONDS - started)) s"
# For testinfra and Fabric (fabric.yaml points at it): hosts app and sidecar.
vagrant ssh-config > .vagrant/ssh-config
"$HERE/lab-smoke.sh"
