#!/usr/bin/env bash
# The app's Python env at $LAB_ENV_PREFIX (/usr/local/envs/joblab), conda or venv at the same prefix.
#   LAB_PYTHON_ENV=auto   (default) conda when a Miniconda installer is in the artifact cache
#                         ($LAB_ARTIFACTS/miniconda/Miniconda3-*.sh), else venv
#   LAB_PYTHON_ENV=conda  run that installer into /usr/local/miniconda (batch mode), then
#                         `conda create -p PREFIX python=3.9`: the path for CentOS 6, whose own
#                         Python is 2.6 (RHEL-FACTS §2, §9)
#   LAB_PYTHON_ENV=venv   `python3 -m venv PREFIX` with the OS's Python (3.9 or newer)
#   LAB_CONDA_CHANNEL     channel of the conda env's packages (default conda-forge: Anaconda's
#                         defaults need glibc >= 2.17 since 2021)
# Either way pip is upgraded. An existing env is kept (delete the prefix to rebuild it); then the
# script prints nothing. Run as root.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# Pinned: 3.9 is the newest CPython whose compiled deps still install on glibc 2.12 (RHEL-FACTS §2).
CONDA_PYTHON_VERSION=3.9
CONDA_ROOT=/usr/local/miniconda
LAB_PYTHON_ENV="${LAB_PYTHON_ENV:-auto}"
LAB_CONDA_CHANNEL="${LAB_CONDA_CHANNEL:-conda-forge}"
# Written last, holding "venv" or "conda": the env is complete.
ENV_STAMP="$LAB_ENV_PREFIX/.joblab-env"

# The newest cached Miniconda installer, or nothing.
find_miniconda_installer() {
    compgen -G "$LAB_ARTIFACTS/miniconda/Miniconda3-*.sh" | sort -V | tail -n 1 || true
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

python_version() {
    "$LAB_ENV_PREFIX/bin/python" -c 'import platform; print(platform.python_version())'
}

create_conda_env() {
    local installer="$1"
    if [[ ! -x "$CONDA_ROOT/bin/conda" ]]; then
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
    exit 0
fi

installer="$(find_miniconda_installer)"
case "$LAB_PYTHON_ENV" in
    conda)
        [[ -n "$installer" ]] || die "LAB_PYTHON_ENV=conda but no Miniconda3-*.sh in $LAB_ARTIFACTS/miniconda/"
        kind=conda why="LAB_PYTHON_ENV=conda" ;;
    venv) kind=venv why="LAB_PYTHON_ENV=venv" ;;
    auto)
        if [[ -n "$installer" ]]; then
            kind=conda why="auto: Miniconda installer $(basename "$installer") in the artifact cache"
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
echo "$kind" >"$ENV_STAMP"
say "python env: $kind at $LAB_ENV_PREFIX, Python $(python_version) ($why)"
