#!/usr/bin/env bash
# Make sure a Docker engine answers on this host (the Vagrant docker provider needs one).
#
#   - dockerd missing   -> install Debian's docker.io (apt-get update once, noninteractive)
#   - engine not up     -> start dockerd in the background (this host has no init system that
#                          would do it), log to $DOCKERD_LOG, wait up to $DOCKERD_WAIT_SECONDS
#   - engine answering  -> prints "docker engine: running" and changes nothing
#
# Any docker client on PATH works: /usr/local/bin/docker (28.x) talks to Debian's 20.10 engine.
# Env: DOCKERD_LOG, DOCKERD_WAIT_SECONDS.
set -euo pipefail

# Pinned: the Debian 12 package and the engine version it gives.
DOCKER_PACKAGE="docker.io"   # 20.10.24 on bookworm
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"
DOCKERD_PIDFILE="/var/run/docker.pid"

export HOST_TOOL=docker-engine
# shellcheck source=provision/host/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_answers() {
    "${as_root[@]}" docker info >/dev/null 2>&1
}

install_docker_package() {
    command -v dockerd >/dev/null 2>&1 && return 0
    echo "docker engine: installing $DOCKER_PACKAGE"
    # No recommends: apparmor/needrestart/git are not needed to run the engine.
    apt_install_host "$DOCKER_PACKAGE"
    command -v dockerd >/dev/null 2>&1 || die "$DOCKER_PACKAGE installed but dockerd is not on PATH"
}

dockerd_process_alive() {
    local pid
    [[ -f "$DOCKERD_PIDFILE" ]] || return 1
    pid="$("${as_root[@]}" cat "$DOCKERD_PIDFILE" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && "${as_root[@]}" kill -0 "$pid" 2>/dev/null
}

# A dockerd killed without cleanup leaves its pid file behind and the next one refuses to start.
remove_stale_pidfile() {
    if [[ -f "$DOCKERD_PIDFILE" ]] && ! dockerd_process_alive; then
        "${as_root[@]}" rm -f "$DOCKERD_PIDFILE"
    fi
}

start_dockerd_in_background() {
    if dockerd_process_alive; then
        echo "docker engine: dockerd already starting, waiting for it"
        return 0
    fi
    remove_stale_pidfile
    echo "docker engine: starting dockerd (log: $DOCKERD_LOG)"
    # setsid: its own session, so it outlives this shell and a Ctrl-C here does not reach it.
    # shellcheck disable=SC2016  # $1 is expanded by the inner sh
    "${as_root[@]}" sh -c 'setsid dockerd >>"$1" 2>&1 </dev/null &' sh "$DOCKERD_LOG"
}

wait_for_engine() {
    local waited=0
    until engine_answers; do
        if (( waited >= DOCKERD_WAIT_SECONDS )); then
            die "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s; see $DOCKERD_LOG"
        fi
        if (( waited >= 3 )) && ! dockerd_process_alive && ! pgrep -x dockerd >/dev/null; then
            die "dockerd exited: $("${as_root[@]}" tail -n 1 "$DOCKERD_LOG" 2>/dev/null)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

main() {
    use_sudo_unless_root "the Docker engine"
    if engine_answers; then
        echo "docker engine: running"
        return 0
    fi
    install_docker_package
    start_dockerd_in_background
    wait_for_engine
    echo "docker engine: running ($("${as_root[@]}" docker info --format '{{.ServerVersion}}' 2>/dev/null))"
}

main "$@"
