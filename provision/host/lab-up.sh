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
export HOST_TOOL=lab
# shellcheck source=provision/host/lib.sh
source "$HERE/lib.sh"
# The topology asked for (LAB_TOPOLOGY, else lab.yml's) against the running lab's: the machines of
# one must be gone before the other boots (the Vagrantfile refuses too).
running="$(cat .vagrant/lab-topology 2>/dev/null || true)"
topology="${LAB_TOPOLOGY:-${running:-$(lab_query topology)}}"
[[ -z "$running" || "$running" == "$topology" ]] \
    || die "the running lab is the $running topology, not $topology: make lab-destroy first"
mkdir -p .vagrant
echo "$topology" >.vagrant/lab-topology
export LAB_TOPOLOGY="$topology"
say "topology: $topology"
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

# Provision NAME... at once, each into its own log; one line naming the first that failed.
provision_together() {
    local name pids=() failed="" since=$SECONDS
    say "provisioning $* together (each into .vagrant/provision-<name>.log)"
    for name in "$@"; do
        vagrant provision "$name" >".vagrant/provision-$name.log" 2>&1 &
        pids+=("$!")
    done
    for name in "$@"; do
        wait "${pids[0]}" || failed+="${failed:+, }$name"
        pids=("${pids[@]:1}")
    done
    [[ -z "$failed" ]] || die "provisioning failed on $failed (see .vagrant/provision-<name>.log)"
    say "provisioned $* in $((SECONDS - since)) s"
}

started=$SECONDS
if [[ "$topology" == cluster ]]; then
    say "vagrant up: the cluster's machines (first time: packages are installed in each, several minutes)"
    # The db alone first (its `vagrant up` makes the lab's network), then the others at once
    # where the provider can (docker, libvirt; VirtualBox boots them one by one anyway).
    dbs="$(lab_query role db)"
    mapfile -t dbs <<<"$dbs"
    vagrant up "${dbs[@]}" --provider="$provider" --no-provision
    vagrant up --provider="$provider" --no-provision --parallel
    # The db, the three brokers and the load balancer together: none needs another one to finish
    # (a KRaft quorum forms once a majority of its voters runs, so no broker can finish starting
    # alone; the lb's health checks keep out app nodes that are not up yet). Then the app nodes,
    # one at a time: they need the db and the brokers, and migrate the schema and make the topics.
    # Asked first, then split: a failed query must stop here (mapfile < <(...) would hide it).
    brokers="$(lab_query role kafka)"
    apps="$(lab_query role app)"
    lbs="$(lab_query role lb)"
    mapfile -t brokers <<<"$brokers"
    mapfile -t lbs <<<"$lbs"
    provision_together "${dbs[@]}" "${brokers[@]}" "${lbs[@]}"
    mapfile -t apps <<<"$apps"
    for name in "${apps[@]}"; do
        vagrant provision "$name"
    done
else
    say "vagrant up (first time: packages are installed in both machines, a few minutes)"
    # One machine at a time, sidecar first: the app's provisioning needs its database and Kafka.
    vagrant up --provider="$provider" --provision --no-parallel
fi
say "machines up and provisioned in $((SECONDS - started)) s"
# For testinfra and Fabric (fabric.yaml points at it): every machine by its name.
vagrant ssh-config > .vagrant/ssh-config
"$HERE/lab-smoke.sh"
