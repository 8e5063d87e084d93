#!/usr/bin/env bash
# Shared by the host-side scripts (provision/host/*.sh): sourced, never run.
# The sourcing script sets HOST_TOOL (its name in messages) first.

as_root=()

SAY_PREFIX="${SAY_PREFIX:-${HOST_TOOL:-host}:}"
# shellcheck source=provision/lib/say.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/say.sh"

# Commands that need root go through "${as_root[@]}": empty for root, sudo otherwise.
use_sudo_unless_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo${1:+ ($1)}"
        as_root=(sudo)
    fi
}

# apt_install_host PACKAGE... — Debian's packages, no recommends, quietly; one line on failure.
apt_install_host() {
    command -v apt-get >/dev/null 2>&1 || die "missing $* and no apt-get here; install it by hand"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null || die "apt-get install $* failed"
}

# lab_setting NAME — a lab.yml setting, resolved by the one resolver (fablib/labfile.py: a non-empty
# environment variable of the same name wins). Python: $LAB_PYTHON, else the repository's .venv,
# else python3 (with PyYAML).
lab_setting() {
    local root py
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    py="${LAB_PYTHON:-$root/.venv/bin/python}"
    [[ -x "$py" ]] || py=python3
    (cd "$root" && "$py" -m fablib.labfile get "$1") || die "cannot resolve $1 from lab.yml (make venv first)"
}

# lab_query ARGS — fablib.labfile's other answers: `topology`, or `role ROLE` (machine names).
lab_query() {
    local root py
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    py="${LAB_PYTHON:-$root/.venv/bin/python}"
    [[ -x "$py" ]] || py=python3
    (cd "$root" && "$py" -m fablib.labfile "$@") || die "lab.yml has no answer to: $*"
}
