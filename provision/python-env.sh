#!/usr/bin/env bash
# The app's Python env at $LAB_ENV_PREFIX (/usr/local/envs/joblab), conda or venv at the same prefix.
#   LAB_PYTHON_ENV=auto   (lab.yml) conda when the pinned Miniconda installer is in the artifact
#                         cache ($LAB_ARTIFACTS/miniconda/$LAB_MINICONDA_INSTALLER), and always on
#                         a RHEL 6 machine (no Python 3 there); else venv
#   LAB_PYTHON_ENV=conda  run that installer into /usr/local/miniconda (batch mode), then
#                         `conda create -p PREFIX python=3.9`: the path for CentOS 6, whose own
#                         Python is 2.6 (RHEL-FACTS §2, §9)
#   LAB_PYTHON_ENV=venv   `python3 -m venv PREFIX` with the OS's Python (3.9 or newer)
#   LAB_CONDA_CHANNEL     channel of the conda env's packages (default conda-forge: Anaconda's
#                         defaults need glibc >= 2.17 since 2021)
# Either way pip is upgraded. An existing env is kept (delete the prefix to rebuild it); then the
# script prints nothing.
# On glibc older than 2.17 (CentOS 6) it also builds gevent from source into the env, once: no
# gevent >= 23.9.1 (pyproject.toml's floor, past CVE-2023-41419) has a wheel for glibc 2.12 (see
# build_gevent_for_old_glibc). Run as root.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# Pinned: 3.9 is the newest CPython whose compiled deps still install on glibc 2.12 (RHEL-FACTS §2).
CONDA_PYTHON_VERSION=3.9
CONDA_ROOT=/usr/local/miniconda
need_settings LAB_ENV_NAME LAB_PYTHON_ENV LAB_WORKER_CLASS LAB_MINICONDA_INSTALLER LAB_MINICONDA_SHA256
LAB_CONDA_CHANNEL="${LAB_CONDA_CHANNEL:-conda-forge}"
# Written last, holding "venv" or "conda": the env is complete.
ENV_STAMP="$LAB_ENV_PREFIX/.joblab-env"
# gevent for glibc < 2.17, built from source: the floor the app asks for (pyproject.toml), and
# the release built. 23.9.1 bundles libuv 1.44, the last libuv line that supports glibc 2.12
# (libuv 1.45 moved to glibc 2.17 and kernel 3.10); newer gevents bundle newer libuvs.
GEVENT_FLOOR=23.9.1
GEVENT_SOURCE_VERSION=23.9.1

# The pinned installer (lab.yml: LAB_MINICONDA_INSTALLER, LAB_MINICONDA_SHA256) when it is in the
# artifact cache, or nothing. `make lab` checks it on the host for CentOS 6 machines already.
find_miniconda_installer() {
    local path="$LAB_ARTIFACTS/miniconda/$LAB_MINICONDA_INSTALLER"
    [[ -f "$path" ]] && echo "$path"
    return 0
}

# Run an installer only if it is the one pinned (a truncated download or another file would
# otherwise run as root).
check_installer() {
    local got
    [[ -n "$LAB_MINICONDA_SHA256" ]] || die "LAB_MINICONDA_SHA256 is not set (lab.yml pins it)"
    got="$(sha256sum "$1" | awk '{print $1}')"
    [[ "$got" == "$LAB_MINICONDA_SHA256" ]] \
        || die "$1 has sha256 $got, not the pinned $LAB_MINICONDA_SHA256: replace it with the real $LAB_MINICONDA_INSTALLER"
}

# The first OS Python that is 3.9+ and can make venvs with pip.
find_os_python() {
    local py
    for py in python3 python3.13 python3.12 python3.11 python3.10 python3.9; do
        command -v "$py" >/dev/null 2>&1 || continue
        "$py" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || continue
        command -v "$py"
        return 0
    done
    return 1
}

# True when this machine's glibc is older than $1 (false where getconf cannot tell: not glibc).
glibc_older_than() {
    local have
    have="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
    [[ -n "$have" && "$have" != "$1" && "$(printf '%s\n' "$have" "$1" | sort -V | head -n 1)" == "$have" ]]
}

# pip --only-binary=:all: --platform manylinux2010_x86_64 --python-version 3.9 finds gevent up to
# 22.10.2 only, so on glibc 2.12 pip would build gevent's sdist itself when app.sh installs the
# app - and fail: gevent's build asks for greenlet >= 3.0rc3, which has no glibc-2.12 wheel either
# and needs a C++11 compiler (CentOS 6's gcc 4.4 is not one). So it is built here, once:
#   --no-build-isolation  against what is installed in the env instead: greenlet 2.0.2 (a
#                         manylinux2010 wheel; ABI-compatible with 3.x, and what gevent 23.9.1
#                         needs at run time on Python < 3.11), Cython < 3.1 (3.1 rejects gevent
#                         23.9.1's sources: "undeclared name not builtin: long"), cffi, setuptools
#   --prefer-binary       the newest of those that has a wheel for this machine
#   gcc, make             from the OS (base + updates repos); Python's headers come with the env
# The same pins built gevent 23.9.1 on Debian 12 (Python 3.11, 2026-11); on a real CentOS 6 the
# build is UNCONFIRMED (no EL6 mirror was reachable from where this was written). If it fails,
# provisioning stops here with pip's last line: the app cannot run without gevent, whichever
# LAB_WORKER_CLASS is set (gevent is a dependency of the wheel).
build_gevent_for_old_glibc() {
    glibc_older_than 2.17 || return 0
    local py="$LAB_ENV_PREFIX/bin/python" have out
    have="$("$py" -c 'import gevent; print(gevent.__version__)' 2>/dev/null || true)"
    if [[ -n "$have" && "$(printf '%s\n' "$have" "$GEVENT_FLOOR" | sort -V | head -n 1)" == "$GEVENT_FLOOR" ]]; then
        return 0
    fi
    say "building gevent $GEVENT_SOURCE_VERSION from source ($(getconf GNU_LIBC_VERSION): no gevent >= $GEVENT_FLOOR wheel installs here; a few minutes)"
    pkg_install gcc make
    local pip=("$py" -m pip install --quiet --disable-pip-version-check --prefer-binary)
    "${pip[@]}" "greenlet==2.0.2" "Cython>=3.0.2,<3.1" "cffi>=1.12.3" setuptools wheel \
        || die "pip install of gevent's build requirements failed"
    if ! out="$("${pip[@]}" --no-build-isolation --no-binary gevent "gevent==$GEVENT_SOURCE_VERSION" 2>&1)"; then
        die "building gevent $GEVENT_SOURCE_VERSION failed (the app needs gevent >= $GEVENT_FLOOR): $(tail -n 1 <<<"$out")"
    fi
}

python_version() {
    "$LAB_ENV_PREFIX/bin/python" -c 'import platform; print(platform.python_version())'
}

create_conda_env() {
    local installer="$1"
    if [[ ! -x "$CONDA_ROOT/bin/conda" ]]; then
        check_installer "$installer"
        say "installing Miniconda ($(basename "$installer")) into $CONDA_ROOT"
        rm -rf "$CONDA_ROOT"   # a half-finished earlier attempt; the installer refuses an existing dir
        bash "$installer" -b -p "$CONDA_ROOT" >/dev/null || die "Miniconda installer $installer failed"
    fi
    "$CONDA_ROOT/bin/conda" create --yes --quiet --prefix "$LAB_ENV_PREFIX" \
        --override-channels --channel "$LAB_CONDA_CHANNEL" "python=$CONDA_PYTHON_VERSION" pip >/dev/null \
        || die "conda create of $LAB_ENV_PREFIX failed (channel $LAB_CONDA_CHANNEL)"
}

create_venv() {
    local py
    py="$(find_os_python)" || die "no Python 3.9+ with venv support on this OS (run provision/base.sh, or use conda: put a Miniconda installer in $LAB_ARTIFACTS/miniconda/)"
    "$py" -m venv "$LAB_ENV_PREFIX" || die "$py -m venv $LAB_ENV_PREFIX failed"
}

require_root
case "$LAB_PYTHON_ENV" in
    auto | conda | venv) ;;
    *) die "LAB_PYTHON_ENV must be auto, conda or venv (got '$LAB_PYTHON_ENV')" ;;
esac

if [[ -f "$ENV_STAMP" ]]; then
    kind="$(cat "$ENV_STAMP")"
    if [[ "$LAB_PYTHON_ENV" != auto && "$LAB_PYTHON_ENV" != "$kind" ]]; then
        say "kept the existing $kind env at $LAB_ENV_PREFIX although LAB_PYTHON_ENV=$LAB_PYTHON_ENV (delete it to switch)"
    fi
    # An env made before the gevent floor was raised still gets its gevent built (no-op elsewhere).
    build_gevent_for_old_glibc
    exit 0
fi

installer="$(find_miniconda_installer)"
detect_os
no_python3=0
[[ "$OS_FAMILY" == rhel && "$OS_MAJOR" == 6 ]] && no_python3=1
no_installer="no $LAB_MINICONDA_INSTALLER in $LAB_ARTIFACTS/miniconda/ (put it there on the host: sha256 $LAB_MINICONDA_SHA256)"
case "$LAB_PYTHON_ENV" in
    conda)
        [[ -n "$installer" ]] || die "LAB_PYTHON_ENV=conda but $no_installer"
        kind=conda why="LAB_PYTHON_ENV=conda" ;;
    venv) kind=venv why="LAB_PYTHON_ENV=venv" ;;
    auto)
        if [[ -n "$installer" ]]; then
            kind=conda why="auto: Miniconda installer $(basename "$installer") in the artifact cache"
        elif [[ $no_python3 -eq 1 ]]; then
            # CentOS 6 has no Python 3 to make a venv with: stop now, saying what to do.
            die "RHEL/CentOS 6 has no Python 3.9: $no_installer"
        else
            kind=venv why="auto: no Miniconda installer in $LAB_ARTIFACTS/miniconda/"
        fi ;;
esac

if [[ -e "$LAB_ENV_PREFIX" ]]; then
    say "removing the unfinished env at $LAB_ENV_PREFIX (no $(basename "$ENV_STAMP") stamp)"
    rm -rf "$LAB_ENV_PREFIX"
fi
install -d -m 0755 "$(dirname "$LAB_ENV_PREFIX")"
if [[ "$kind" == conda ]]; then
    create_conda_env "$installer"
else
    create_venv
fi
"$LAB_ENV_PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
    || die "pip upgrade in $LAB_ENV_PREFIX failed"
build_gevent_for_old_glibc
echo "$kind" >"$ENV_STAMP"
say "python env: $kind at $LAB_ENV_PREFIX, Python $(python_version) ($why)"
