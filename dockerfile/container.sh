#!/usr/bin/env bash
# The all-in-one joblab container: the lab's two machines in one, set up by the lab's own
# provision scripts (no second copy of any install step). Runs inside the container or image:
#
#   container.sh collect   with network, in a throwaway container (provision/host/container-deps.sh):
#                          provision once, then keep every .deb and Python wheel it used in /out,
#                          so that the image build needs no network
#   container.sh build     in `docker build` (dockerfile/Dockerfile): provision from those files
#                          only, then remove everything per-instance (secrets, data, logs)
#   container.sh start     the container's PID 1: provision again (installs nothing; generates the
#                          secrets, formats Kafka's storage, migrates the store, creates the topics,
#                          starts the services in order), then wait; on TERM (docker stop) stop
#                          them gracefully - job workers first, so each finishes its job - and exit
#
# Settings: lab.yml's `settings` (copied into the image as lab-settings.env by container-deps.sh)
# and, at start, environment variables of the same names (docker run -e LAB_GUNICORN_WORKERS=3).
# JOBLAB_DB: sqlite (default: the embedded store, in the data volume) | postgresql (the lab's
# sidecar database script, on 127.0.0.1).
# LAB_APP_SOURCE: the development variant - a working tree mounted there is served instead of the
# installed release (docs/container.md). A joblab tree mounted at the seed's app directory
# (SEED_APP_DIR, -v $HOME/nginx-gunicorn-flask:/opt/apps) is that, with nothing else to say.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LAB_ROOT="${LAB_ROOT:-$HERE}"
export LAB_ARTIFACTS="${LAB_ARTIFACTS:-$LAB_ROOT/artifacts}"
# Where the sidecar's database script leaves the password for the app's script: one host here.
export LAB_HANDOFF="${LAB_HANDOFF:-/etc/joblab/handoff}"
SETTINGS="${LAB_SETTINGS_FILE:-$LAB_ROOT/lab-settings.env}"
# Order of the lab's provisioning: the sidecar's scripts, then the app machine's.
SCRIPTS=(ca-certs base java kafka database python-env app supervisor nginx)
# Everything provisioning generates for one instance: never part of the image.
# (joblab.env holds the database URL, with PostgreSQL's password in it.)
PER_INSTANCE=(/etc/joblab/secrets /etc/joblab/handoff /etc/joblab/joblab.env /var/lib/joblab /var/lib/kafka
    /var/log/joblab /var/log/kafka /var/log/supervisor /var/log/nginx)

# Where the seed's development variant mounts the working tree.
SEED_APP_DIR=/opt/apps
SAY_PREFIX="[container]"
# shellcheck source=provision/lib/say.sh
source "$LAB_ROOT/provision/lib/say.sh"

load_settings() {
    local line name
    [[ -r "$SETTINGS" ]] || die "no $SETTINGS (made by provision/host/container-deps.sh)"
    # KEY=value lines; an environment variable of the same name wins, as in the lab.
    while IFS= read -r line; do
        [[ "$line" =~ ^(LAB_[A-Z0-9_]+)=(.*)$ ]] || continue
        name="${BASH_REMATCH[1]}"
        [[ -n "${!name:-}" ]] || export "$name=${BASH_REMATCH[2]}"
    done <"$SETTINGS"
    JOBLAB_DB="${JOBLAB_DB:-sqlite}"
    case "$JOBLAB_DB" in
        sqlite | postgresql) ;;
        *) die "JOBLAB_DB must be sqlite or postgresql (got '$JOBLAB_DB')" ;;
    esac
    export LAB_DB_KIND="$JOBLAB_DB" LAB_SIDECAR_HOST=127.0.0.1 LAB_APP_HOST=127.0.0.1
}

provision() {
    local script
    for script in "${SCRIPTS[@]}"; do
        if [[ "$script" == database && "$LAB_DB_KIND" == sqlite ]]; then
            continue
        fi
        bash "$LAB_ROOT/provision/$script.sh" || die "provision/$script.sh failed"
    done
}

# Stop order: job workers and gunicorn first (each worker finishes its job and commits), then
# nginx, then the broker and the database they used.
stop_services() {
    local name
    for name in supervisord nginx kafka postgresql; do
        [[ -x "/etc/init.d/$name" ]] || continue
        service "$name" status >/dev/null 2>&1 || continue
        service "$name" stop || say "service $name stop failed"
    done
}

collect() {
    local out="${COLLECT_INTO:?}" env py
    export JOBLAB_DB=postgresql  # a superset of sqlite's: PostgreSQL's packages and driver too
    load_settings
    provision
    pkg_install_utils
    stop_services
    install -d "$out/debs" "$out/wheels"
    cp /var/cache/apt/archives/*.deb "$out/debs/"
    (cd "$out/debs" && apt-ftparchive packages . >Packages) || die "apt-ftparchive failed"
    for env in /usr/local/envs/*/; do
        py="$env/bin/python"
        [[ -x "$py" ]] || continue
        # Everything installed there but the app itself (its wheel is an artifact of its own).
        "$py" -m pip freeze --all --exclude joblab >"/tmp/reqs.txt"
        "$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: -d "$out/wheels" \
            -r /tmp/reqs.txt || die "pip download for $env failed"
    done
    say "collected $(find "$out/debs" -name '*.deb' | wc -l) packages and $(find "$out/wheels" -type f | wc -l) wheels"
}

pkg_install_utils() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apt-utils >/dev/null \
        || die "apt-get install apt-utils failed"
}

# Build: apt and pip see only the collected files (no network needed, none used).
build() {
    local deps="$LAB_ROOT/deps"
    load_settings
    mv /etc/apt/sources.list /etc/apt/sources.list.joblab-build
    echo "deb [trusted=yes] file:$deps/debs ./" >/etc/apt/sources.list
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$deps/wheels"
    provision
    stop_services
    # The seed's development steps type `pip install -e .` with its env active: here `pip` is the
    # app env's pip (the base image has no other).
    ln -sfn "/usr/local/envs/$LAB_ENV_NAME/bin/pip" /usr/local/bin/pip
    mv /etc/apt/sources.list.joblab-build /etc/apt/sources.list
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb "$deps"
    local path
    for path in "${PER_INSTANCE[@]}"; do
        if [[ -d "$path" ]]; then
            find "$path" -mindepth 1 -delete
        elif [[ -e "$path" ]]; then
            rm -f -- "$path"
        fi
    done
    say "image provisioned; secrets and data are made at first start"
}

start() {
    load_settings
    if [[ -z "${LAB_APP_SOURCE:-}" && -f "$SEED_APP_DIR/app/__init__.py" && -f "$SEED_APP_DIR/worker/__init__.py" ]]; then
        export LAB_APP_SOURCE="$SEED_APP_DIR"
        say "serving the working tree mounted at $SEED_APP_DIR (the development variant)"
    fi
    trap 'say "stopping"; stop_services; say "stopped"; exit 0' TERM INT
    export PIP_NO_INDEX=1  # everything is installed: provisioning must not reach for the network
    provision
    say "ready; a token for user NAME: docker exec <container> runuser -u $LAB_APP_USER -- joblab-exec flask --app app users create NAME"
    # Wait in the background so the TERM trap runs at once.
    while true; do
        sleep 3600 &
        wait $! || true
    done
}

case "${1:-}" in
    collect) collect ;;
    build) build ;;
    start) start ;;
    *) echo "usage: container.sh collect|build|start" >&2; exit 2 ;;
esac
