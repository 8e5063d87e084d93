#!/usr/bin/env bash
# The job API and worker on the app machine: the app user, the app wheel in the Python env, the
# joblab-exec wrapper, /etc/joblab (gunicorn.conf.py, joblab.env, secrets), then the schema migration
# and the Kafka topics on the sidecar. Needs python-env.sh first, and the sidecar provisioned (it leaves
# the database password in $LAB_HANDOFF/db-password). Run as root.
#
# Settings (lab.yml, resolved; checked here):
#   LAB_WORKER_CLASS       gevent (as the seed) | sync: gunicorn's worker class
#   LAB_GUNICORN_WORKERS   gunicorn worker processes
#   LAB_GUNICORN_MAX_REQUESTS  gunicorn max_requests (0: workers are never recycled)
#   LAB_GUNICORN_TIMEOUT   gunicorn timeout in seconds
#   LAB_JOB_WORKERS        job worker processes (supervisor.sh starts them), at most
#                          LAB_KAFKA_PARTITIONS do work
#   LAB_LOG_LEVEL          JOBLAB_LOG_LEVEL of app and worker
#   LAB_JOB_MAX_SECONDS    JOBLAB_JOB_MAX_SECONDS: the longest job allowed (supervisor.sh derives the
#                          job workers' stopwaitsecs from it)
#   LAB_METRICS_DIR        JOBLAB_METRICS_DIR: the app processes' metric files; made by the app user
#                          itself (root never acts in a directory that user controls), mode 0750
# Context (environment):
#   LAB_DB_HOST, LAB_KAFKA_HOSTS   the results database and the brokers (default: the sidecar)
#   LAB_KAFKA_REPLICATION  replicas of the job topics it creates (default 1)
#   LAB_DB_KIND            postgresql (default on Debian) | mssql (default on RHEL): the results store
#                          on the sidecar or db; sqlite: a file in the app user's home (the all-in-one container)
#   LAB_APP_SOURCE         run the code in this directory (a mounted working tree: the container's
#                          development variant) instead of the installed release
#   LAB_SKIP_REMOTE=1      skip the steps that need the sidecar (schema migration, topic creation)
# When the wheel or the settings changed and supervisord already runs the programs, they are restarted.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_settings LAB_ENV_NAME LAB_APP_USER LAB_WORKER_CLASS LAB_GUNICORN_WORKERS LAB_GUNICORN_MAX_REQUESTS \
    LAB_GUNICORN_TIMEOUT LAB_JOB_WORKERS LAB_KAFKA_PARTITIONS LAB_LOG_LEVEL LAB_JOB_MAX_SECONDS LAB_METRICS_DIR
LAB_SKIP_REMOTE="${LAB_SKIP_REMOTE:-0}"
LAB_APP_SOURCE="${LAB_APP_SOURCE:-}"
# Database and role the sidecar creates for the app.
DB_NAME=joblab
DB_USER=joblab

DEVOPS="$LAB_ROOT/devops"
APP_HOME=/var/lib/joblab
PY="$LAB_ENV_PREFIX/bin/python"
# sha256 of the wheel last installed into the env.
WHEEL_STAMP="$LAB_ENV_PREFIX/.joblab-wheel.sha256"
RELEASES_ROOT=/opt/joblab  # joblab-release's layout (devops/joblab-release)
RELEASE_TOOL=/usr/local/sbin/joblab-release
SECRETS="$LAB_ETC/secrets"
ENV_FILE="$LAB_ETC/joblab.env"
SUPERVISORCTL=(/usr/local/envs/supervisor/bin/supervisorctl -c /etc/supervisord.conf)
# The results database and the Kafka brokers: the sidecar, or the cluster's db and kafka1..3.
DB_HOST="${LAB_DB_HOST:-$LAB_SIDECAR_HOST}"

# host:9092 of every broker, comma-separated: clients bootstrap from all of them.
kafka_bootstrap() {
    local hosts=() h out=""
    IFS=', ' read -r -a hosts <<<"${LAB_KAFKA_HOSTS:-$LAB_SIDECAR_HOST}"
    for h in "${hosts[@]}"; do
        out+="${out:+,}$h:9092"
    done
    printf '%s' "$out"
}

check_settings() {
    [[ "${LAB_LOG_LEVEL^^}" =~ ^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$ ]] \
        || die "LAB_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got '$LAB_LOG_LEVEL')"
    [[ "$LAB_WORKER_CLASS" == gevent || "$LAB_WORKER_CLASS" == sync ]] \
        || die "LAB_WORKER_CLASS must be gevent or sync (got '$LAB_WORKER_CLASS')"
    local name
    for name in LAB_GUNICORN_WORKERS LAB_JOB_WORKERS LAB_KAFKA_PARTITIONS; do
        [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "$name must be a positive number (got '${!name}')"
    done
    [[ "$LAB_GUNICORN_MAX_REQUESTS" =~ ^(0|[1-9][0-9]{0,8})$ ]] \
        || die "LAB_GUNICORN_MAX_REQUESTS must be a whole number, 0 for never (got '$LAB_GUNICORN_MAX_REQUESTS')"
    [[ "$LAB_GUNICORN_TIMEOUT" =~ ^[1-9][0-9]{0,3}$ ]] \
        || die "LAB_GUNICORN_TIMEOUT must be 1-9999 seconds (got '$LAB_GUNICORN_TIMEOUT')"
    # app/config.py JOB_MAX_SECONDS_RANGE: whole seconds here, so supervisor's wait is exact.
    if ! [[ "$LAB_JOB_MAX_SECONDS" =~ ^[1-9][0-9]{0,3}$ ]] || ((LAB_JOB_MAX_SECONDS > 3600)); then
        die "LAB_JOB_MAX_SECONDS must be 1-3600 seconds (got '$LAB_JOB_MAX_SECONDS')"
    fi
    # An absolute path of plain names (none starts with a dot: no . or .. steps; no blanks).
    [[ "$LAB_METRICS_DIR" =~ ^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$ ]] \
        || die "LAB_METRICS_DIR must be an absolute path of plain names (got '$LAB_METRICS_DIR')"
    if ((LAB_JOB_WORKERS > LAB_KAFKA_PARTITIONS)); then
        say "note: $LAB_JOB_WORKERS job workers but $LAB_KAFKA_PARTITIONS partitions: $((LAB_JOB_WORKERS - LAB_KAFKA_PARTITIONS)) will idle"
    fi
    if [[ -n "$LAB_APP_SOURCE" ]]; then
        [[ "$LAB_APP_SOURCE" == /* && -f "$LAB_APP_SOURCE/app/__init__.py" && -f "$LAB_APP_SOURCE/worker/__init__.py" ]] \
            || die "LAB_APP_SOURCE=$LAB_APP_SOURCE is not a joblab working tree (an absolute path holding app/ and worker/)"
    fi
    case "${LAB_DB_KIND:-}" in
        "") if [[ "$OS_FAMILY" == rhel ]]; then LAB_DB_KIND=mssql; else LAB_DB_KIND=postgresql; fi ;;
        postgresql | mssql | sqlite) ;;
        *) die "LAB_DB_KIND must be postgresql, mssql or sqlite (got '$LAB_DB_KIND')" ;;
    esac
}

# Install the one cached joblab wheel (deps from PyPI) unless that exact file is installed already.
# Returns 0 when it installed, 1 when nothing changed.
install_app_wheel() {
    local wheels=() whl sha
    mapfile -t wheels < <(compgen -G "$LAB_ARTIFACTS/app/joblab-*.whl" || true)
    [[ ${#wheels[@]} -eq 1 ]] || die "need exactly one joblab-*.whl in $LAB_ARTIFACTS/app, found ${#wheels[@]} (build it on the host: pip wheel --no-deps -w .cache/artifacts/app .)"
    whl="${wheels[0]}"
    sha="$(sha256sum "$whl" | cut -d' ' -f1)"
    if [[ "$(cat "$WHEEL_STAMP" 2>/dev/null)" == "$sha" ]] && "$PY" -m pip show -q joblab >/dev/null 2>&1; then
        return 1
    fi
    say "installing $(basename "$whl") into $LAB_ENV_PREFIX"
    local pip=("$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    # --prefer-binary: on old glibc (CentOS 6) take the newest release that has a wheel for this
    # machine rather than try to compile a newer sdist. [$LAB_DB_KIND]: this store's driver only.
    local spec="${whl}[${LAB_DB_KIND}]"
    [[ "$LAB_DB_KIND" != sqlite ]] || spec="$whl"  # Python's own sqlite3: no driver to add
    "${pip[@]}" --prefer-binary "$spec" || die "pip install $spec failed"
    # Same version number, new build: replace the app's own files too.
    "${pip[@]}" --no-deps --force-reinstall "$whl" || die "pip install $whl failed"
    echo "$sha" >"$WHEEL_STAMP"
}

# The app's code runs from a release directory (/opt/joblab/current -> releases/<stamp>-<version>),
# kept by joblab-release, as for `fab deploy` and `fab rollback`. Provisioning makes a release from
# the cached wheel when there is none yet or when that wheel changed (the one it replaces becomes
# `previous`, rollback's target); otherwise it leaves `current` alone (it may be a newer deploy).
# Returns 0 when it switched `current`.
install_release() {
    local wheel_changed="$1" rel out
    if [[ -L "$RELEASES_ROOT/current" && "$wheel_changed" -eq 0 ]]; then
        return 1
    fi
    rel="$(JOBLAB_ENV_PREFIX="$LAB_ENV_PREFIX" "$RELEASE_TOOL" install "$(compgen -G "$LAB_ARTIFACTS/app/joblab-*.whl")")" \
        || die "joblab-release install failed"
    out="$("$RELEASE_TOOL" activate "$(basename "$rel")")" || die "joblab-release activate failed"
    say "release $out"
}

# The SQLAlchemy URL of the results store, password URL-encoded (read from the file, never in argv).
database_url() {
    local pw
    if [[ "$LAB_DB_KIND" == sqlite ]]; then
        echo "sqlite:///$APP_HOME/joblab.db"
        return 0
    fi
    pw="$("$PY" -c 'import sys, urllib.parse; sys.stdout.write(urllib.parse.quote(sys.stdin.read().strip("\r\n"), safe=""))' \
        <"$SECRETS/db-password")" || die "cannot read $SECRETS/db-password"
    [[ -n "$pw" ]] || die "$SECRETS/db-password is empty"
    if [[ "$LAB_DB_KIND" == mssql ]]; then
        echo "mssql+pymssql://$DB_USER:$pw@$DB_HOST:1433/$DB_NAME"
    else
        echo "postgresql+psycopg://$DB_USER:$pw@$DB_HOST:5432/$DB_NAME"
    fi
}

# Run a fixed command line as the app user (its login shell is nologin, hence -s).
as_app_user() {
    su -s /bin/sh "$LAB_APP_USER" -c "$*"
}

# The metrics directory, made (and its mode set) by the app user itself, never by root: it is
# usually in that user's home, where the user could have put a link for root to follow. Root
# then only looks at it (lstat): a directory of the app user's with mode 0750, or provisioning
# stops here. On a first run, says so.
ensure_metrics_dir() {
    local dir="$LAB_METRICS_DIR" out seen
    [[ -e "$dir" || -L "$dir" ]] || say "creating $dir (the app user's metrics directory)"
    # shellcheck disable=SC2016  # $0 belongs to the inner shell
    if ! out="$(su -s /bin/sh "$LAB_APP_USER" -c 'umask 027 && mkdir -p -- "$0" && chmod 0750 -- "$0"' "$dir" 2>&1)"; then
        die "user $LAB_APP_USER cannot make LAB_METRICS_DIR=$dir (it must be where that user may create it, e.g. under its home $APP_HOME): $out"
    fi
    seen="$(stat -c '%F %U %a' "$dir")"
    [[ "$seen" == "directory $LAB_APP_USER 750" ]] \
        || die "$dir must be a directory of $LAB_APP_USER with mode 0750, not: $seen"
}

# Schema migration and topics on the sidecar; both are safe to repeat. Output only on failure.
prepare_remote() {
    local out step
    for step in "db upgrade" "kafka create-topics"; do
        if ! out="$(as_app_user "/usr/local/bin/joblab-exec flask --app app $step" 2>&1)"; then
            die "flask $step failed (database $DB_HOST and Kafka ${LAB_KAFKA_HOSTS:-$LAB_SIDECAR_HOST} reachable? LAB_SKIP_REMOTE=1 skips this step):
$out"
        fi
    done
}

# New code or settings reach running programs only by a restart.
restart_running_programs() {
    [[ -S /var/run/supervisor/supervisor.sock && -x "${SUPERVISORCTL[0]}" ]] || return 0
    local targets=()
    [[ -f /etc/supervisord.d/joblab-web.ini ]] && targets+=(joblab-web)
    [[ -f /etc/supervisord.d/joblab-worker.ini ]] && targets+=('joblab-worker:*')
    [[ ${#targets[@]} -gt 0 ]] || return 0
    say "restarting ${targets[*]} (new app build or settings)"
    "${SUPERVISORCTL[@]}" restart "${targets[@]}" >/dev/null || die "supervisorctl restart ${targets[*]} failed"
}

require_root
detect_os
check_settings
[[ -x "$PY" ]] || die "no Python env at $LAB_ENV_PREFIX (run provision/python-env.sh first)"
[[ "$LAB_DB_KIND" == sqlite || -s "$LAB_HANDOFF/db-password" ]] \
    || die "no database password at $LAB_HANDOFF/db-password: provision the sidecar first (it leaves it there)"

changed=0
ensure_system_user "$LAB_APP_USER" "$APP_HOME"
ensure_metrics_dir
wheel_changed=0
install_app_wheel && wheel_changed=1
install_file "$DEVOPS/joblab-release" "$RELEASE_TOOL" 755 root:root || true
install_release "$wheel_changed" && changed=1
install_file "$DEVOPS/joblab-exec" /usr/local/bin/joblab-exec 755 root:root || true
install_file "$DEVOPS/joblab-gunicorn" /usr/local/bin/joblab-gunicorn 755 root:root || true

ensure_dir "$LAB_ETC" 755 root:root
install_file "$DEVOPS/gunicorn.conf.py" "$LAB_ETC/gunicorn.conf.py" 644 root:root && changed=1
ensure_dir "$SECRETS" 750 "root:$LAB_APP_USER"
ensure_secret "$SECRETS/app-secret" "root:$LAB_APP_USER" 640
if [[ "$LAB_DB_KIND" != sqlite ]]; then
    install_file "$LAB_HANDOFF/db-password" "$SECRETS/db-password" 640 "root:$LAB_APP_USER" || true
fi

db_url="$(database_url)"
# render_template substitutes in bash: the URL (with the password) never reaches a command line.
render_template "$DEVOPS/joblab.env" "$ENV_FILE" 640 "root:$LAB_APP_USER" \
    "APP_USER=$LAB_APP_USER" \
    "ENV_PREFIX=$LAB_ENV_PREFIX" \
    "APP_HOME=$APP_HOME" \
    "DATABASE_URL=$db_url" \
    "KAFKA_BOOTSTRAP=$(kafka_bootstrap)" \
    "KAFKA_PARTITIONS=$LAB_KAFKA_PARTITIONS" \
    "KAFKA_REPLICATION=${LAB_KAFKA_REPLICATION:-1}" \
    "LOG_LEVEL=$LAB_LOG_LEVEL" \
    "JOB_MAX_SECONDS=$LAB_JOB_MAX_SECONDS" \
    "METRICS_DIR=$LAB_METRICS_DIR" \
    "WORKER_CLASS=$LAB_WORKER_CLASS" \
    "GUNICORN_WORKERS=$LAB_GUNICORN_WORKERS" \
    "GUNICORN_MAX_REQUESTS=$LAB_GUNICORN_MAX_REQUESTS" \
    "GUNICORN_TIMEOUT=$LAB_GUNICORN_TIMEOUT" \
    "RELEASE_SITE=${LAB_APP_SOURCE:-$RELEASES_ROOT/current/site}" \
    && changed=1

if [[ "$LAB_SKIP_REMOTE" == 1 ]]; then
    say "LAB_SKIP_REMOTE=1: schema migration and topic creation skipped"
else
    prepare_remote
fi
if [[ $changed -eq 1 ]]; then
    restart_running_programs
fi
