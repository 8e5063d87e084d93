#!/usr/bin/env bash
# `make run`: the whole job stack on this machine, in the foreground.
#   Kafka broker (KRaft, 127.0.0.1:$KAFKA_PORT)  ->  job worker  ->  SQLite (var/joblab.sqlite3)
#   gunicorn (devops/gunicorn.conf.py) serving the API on http://127.0.0.1:$PORT
# Ctrl-C / SIGTERM stops what this script started (a broker that was already running stays).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV="${VENV:-$REPO_ROOT/.venv}"
export PORT="${PORT:-8000}"
export KAFKA_PORT="${KAFKA_PORT:-9092}"
export JOBLAB_KAFKA_BOOTSTRAP="${JOBLAB_KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}"
export JOBLAB_DATABASE_URL="${JOBLAB_DATABASE_URL:-sqlite:///$REPO_ROOT/var/joblab.sqlite3}"
export GUNICORN_WORKERS="${GUNICORN_WORKERS:-2}"
# Every process's Prometheus figures, added up by GET /metrics (app/metrics.py).
export JOBLAB_METRICS_DIR="${JOBLAB_METRICS_DIR:-$REPO_ROOT/var/metrics}"
export FLASK_APP=app

SAY_PREFIX="run:"
# shellcheck source=provision/lib/say.sh
source "$(dirname "${BASH_SOURCE[0]}")/../provision/lib/say.sh"

[[ -x "$VENV/bin/gunicorn" ]] || die "no virtualenv at $VENV (run: make venv)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is already in use (set PORT=... to use another)"
fi

started_broker=0
pids=()
stopping=0

# shellcheck disable=SC2317  # called from the traps below, which shellcheck cannot see
stop_all() {
    [[ $stopping -eq 1 ]] && return
    stopping=1
    say "stopping..."
    # TERM once: gunicorn drains requests, the worker finishes its current job and commits.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $started_broker -eq 1 ]]; then
        "$REPO_ROOT/provision/host/kafka-local.sh" stop
    fi
    say "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

if "$REPO_ROOT/provision/host/kafka-local.sh" status >/dev/null 2>&1; then
    say "Kafka already running on 127.0.0.1:$KAFKA_PORT (left running on exit)"
else
    "$REPO_ROOT/provision/host/kafka-local.sh" start
    started_broker=1
fi

"$VENV/bin/flask" db upgrade
# The job workers' figures of an earlier run (gunicorn clears its own when it starts).
rm -f "$JOBLAB_METRICS_DIR"/worker/*.db
"$VENV/bin/flask" kafka create-topics

# Own process groups: Ctrl-C reaches only this script, which then sends exactly one TERM
# (a second signal would make the worker abandon its job at once).
setsid "$VENV/bin/python" -m worker &
pids+=("$!")
setsid "$VENV/bin/gunicorn" -c "$REPO_ROOT/devops/gunicorn.conf.py" &
pids+=("$!")

say "API on http://127.0.0.1:$PORT  (store: $JOBLAB_DATABASE_URL; Ctrl-C stops)"
say "create a user:  $VENV/bin/flask --app app users create alice"

# If the worker or gunicorn dies, take the rest down too rather than serve half a stack.
set +e
wait -n "${pids[@]}"
rc=$?
set -e
[[ $stopping -eq 1 ]] && exit 0
say "a process exited (status $rc); stopping the rest"
exit 1
