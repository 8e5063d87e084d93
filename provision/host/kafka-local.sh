#!/usr/bin/env bash
# Run a single-node KRaft Kafka broker on 127.0.0.1 for local runs and tests.
#
# Usage: provision/host/kafka-local.sh {start|stop|status|restart|reset}
#   start    fetch Kafka if needed, format storage once, start in the
#            background and wait until the broker answers (no-op if running)
#   stop     SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT s (no-op if stopped)
#   status   print running/stopped; exit 0 if running, 3 if not (LSB style)
#   restart  stop + start
#   reset    stop and delete the data dir (topics, offsets, cluster id, logs)
#
# Env:
#   KAFKA_PORT             client port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         default $ARTIFACT_CACHE/kafka-data/$KAFKA_PORT
#   ARTIFACT_CACHE         default <repo>/.cache/artifacts (see fetch-kafka.sh)
#   LAB_KAFKA_VERSION      lab.yml's (resolved by fablib/labfile.py; fetch-kafka.sh caches its jars)
#   KAFKA_HEAP_OPTS        default -Xmx512m
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 60)
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL (default 30)
#
# Several brokers can run side by side (e.g. one per test session) as long as
# they use different KAFKA_PORTs: everything else is derived from the port.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
export HOST_TOOL=kafka-local
# shellcheck source=provision/host/lib.sh
source "$SCRIPT_DIR/lib.sh"
KAFKA_VERSION="$(lab_setting LAB_KAFKA_VERSION)"
ARTIFACT_CACHE="${ARTIFACT_CACHE:-$REPO_ROOT/.cache/artifacts}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
# Checked here already: the default below does arithmetic with it.
if [[ ! "$KAFKA_PORT" =~ ^[0-9]+$ ]]; then
    echo "kafka-local: error: KAFKA_PORT must be a number, got '$KAFKA_PORT'" >&2
    exit 1
fi
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$ARTIFACT_CACHE/kafka-data/$KAFKA_PORT}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

KAFKA_HOME_DIR="$ARTIFACT_CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME_DIR/libs"
TEMPLATE_DIR="$REPO_ROOT/devops/kafka"

# Everything a broker writes lives in its data dir.
SERVER_PROPS="$KAFKA_DATA_DIR/server.properties"
LOG4J_PROPS="$KAFKA_DATA_DIR/log4j.properties"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster.id"
SERVER_LOG="$KAFKA_DATA_DIR/server.log"
CONSOLE_LOG="$KAFKA_DATA_DIR/kafka.out"
LOG_DIRS="$KAFKA_DATA_DIR/kraft-combined-logs"

# The broker logs this once it serves clients (KafkaRaftServer, 3.x).
READY_LINE="Kafka Server started"

SAY_PREFIX="kafka-local[$KAFKA_PORT]:"

check_settings() {
    local name value
    for name in KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_START_TIMEOUT KAFKA_STOP_TIMEOUT; do
        value="${!name}"
        [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a number, got '$value'"
    done
    [[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] \
        || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
}

# start and stop of the same broker must not interleave (e.g. two test
# sessions both starting port 9092): serialise them per data dir.
take_data_dir_lock() {
    # stop/reset of a broker that never existed must not create its data dir.
    if [[ "$1" != create && ! -d "$KAFKA_DATA_DIR" ]]; then
        return 0
    fi
    mkdir -p "$KAFKA_DATA_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 8>"$KAFKA_DATA_DIR/.lock"
        flock 8
    fi
}

is_port_open() {
    local port="$1"
    # bash's /dev/tcp avoids depending on nc/ss being installed.
    (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# The pid in the pidfile, if that process is alive and really is our broker
# (a stale pidfile may name a pid since reused by something else).
running_broker_pid() {
    local pid state
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        # A zombie still answers kill -0 where nothing reaps orphans (some containers).
        state="$(sed -e 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
        [[ "$state" != Z ]] || return 1
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $SERVER_PROPS" || return 1
    fi
    echo "$pid"
}

ensure_kafka_fetched() {
    if [[ ! -f "$KAFKA_HOME_DIR/.complete" ]]; then
        ARTIFACT_CACHE="$ARTIFACT_CACHE" LAB_KAFKA_VERSION="$KAFKA_VERSION" \
            "$SCRIPT_DIR/fetch-kafka.sh" || die "could not fetch Kafka $KAFKA_VERSION"
    fi
}

# Escape a value for the replacement side of a sed s||| command.
sed_escape() {
    printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

# Render the committed templates into the data dir on every start, so a
# changed template or port takes effect without a reset. The templates are
# shared with the lab (provision/kafka.sh): here the client listener is
# loopback only, bound and advertised on 127.0.0.1.
render_config() {
    local template="$1" target="$2"
    [[ -f "$template" ]] || die "missing template $template"
    sed -e "s|@KAFKA_PORT@|$(sed_escape "$KAFKA_PORT")|g" \
        -e "s|@KAFKA_CONTROLLER_PORT@|$(sed_escape "$KAFKA_CONTROLLER_PORT")|g" \
        -e "s|@KAFKA_DATA_DIR@|$(sed_escape "$KAFKA_DATA_DIR")|g" \
        -e "s|@KAFKA_LOG_DIR@|$(sed_escape "$KAFKA_DATA_DIR")|g" \
        -e "s|@KAFKA_LISTEN_HOST@|127.0.0.1|g" \
        -e "s|@KAFKA_ADVERTISED_HOST@|127.0.0.1|g" \
        "$template" >"$target.tmp"
    if grep -q '@[A-Z_][A-Z0-9_]*@' "$target.tmp"; then
        rm -f -- "$target.tmp"
        die "template $template has a placeholder this script does not fill"
    fi
    mv -f -- "$target.tmp" "$target"
}

run_kafka_tool() {
    java -cp "$KAFKA_LIBS/*" -Dlog4j.configuration="file:$LOG4J_PROPS" "$@"
}

# KRaft refuses to start on unformatted log dirs. Format exactly once: the
# cluster id is kept in the data dir so the metadata already written stays valid.
format_storage_once() {
    local cluster_id
    if [[ -f "$LOG_DIRS/meta.properties" ]]; then
        return 0
    fi
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        cluster_id="$(run_kafka_tool kafka.tools.StorageTool random-uuid)" \
            || die "could not generate a cluster id"
        echo "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    cluster_id="$(<"$CLUSTER_ID_FILE")"
    say "formatting storage in $LOG_DIRS (cluster id $cluster_id)"
    if ! run_kafka_tool kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$SERVER_PROPS" --ignore-formatted \
        >"$KAFKA_DATA_DIR/format.log" 2>&1; then
        cat "$KAFKA_DATA_DIR/format.log" >&2
        die "formatting storage failed"
    fi
}

ensure_ports_free() {
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        # Fail now rather than after the start timeout with a bind error in the log.
        if is_port_open "$port"; then
            die "127.0.0.1:$port is already in use by another process (not this broker: no live pid in $PID_FILE)"
        fi
    done
}

launch_broker() {
    local -a launcher=() heap_opts=()
    # KAFKA_HEAP_OPTS may hold several flags, e.g. "-Xms256m -Xmx1g".
    read -r -a heap_opts <<<"$KAFKA_HEAP_OPTS"
    # Own session: the broker outlives the calling shell and is not hit by its
    # Ctrl-C; `stop` is how it ends. nohup as fallback where setsid is missing.
    if command -v setsid >/dev/null 2>&1; then
        launcher=(setsid)
    else
        launcher=(nohup)
    fi
    # 8>&-: the broker must not inherit the data dir lock, or the next
    # start/stop would wait on it forever.
    # The inner shell writes its own pid and then execs java, so the pidfile
    # holds the JVM's pid whatever setsid/nohup do with forking.
    # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
    "${launcher[@]}" bash -c 'echo "$$" >"$0"; exec "$@"' "$PID_FILE" \
        java "${heap_opts[@]}" \
        -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$LOG4J_PROPS" \
        -cp "$KAFKA_LIBS/*" \
        kafka.Kafka "$SERVER_PROPS" \
        </dev/null >"$CONSOLE_LOG" 2>&1 8>&- &
}

file_size() {
    if [[ -f "$1" ]]; then
        wc -c <"$1"
    else
        echo 0
    fi
}

# Only log lines written by this start count: server.log keeps earlier runs.
ready_line_logged_since() {
    local offset="$1"
    if (($(file_size "$SERVER_LOG") < offset)); then
        offset=0 # rolled over meanwhile
    fi
    tail -c "+$((offset + 1))" "$SERVER_LOG" 2>/dev/null | grep -qF "$READY_LINE"
}

# What went wrong during this start: the new part of server.log (older runs
# and the storage format output would only mislead) and the JVM's console
# output (e.g. a JVM that could not even start).
print_log_tail() {
    local offset="$1"
    if (($(file_size "$SERVER_LOG") < offset)); then
        offset=0
    fi
    if (($(file_size "$SERVER_LOG") > offset)); then
        echo "--- last lines of $SERVER_LOG ---" >&2
        tail -c "+$((offset + 1))" "$SERVER_LOG" | tail -n 25 >&2
    fi
    if [[ -s "$CONSOLE_LOG" ]]; then
        echo "--- $CONSOLE_LOG ---" >&2
        tail -n 25 "$CONSOLE_LOG" >&2
    fi
}

kill_broker() {
    local pid="$1"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f -- "$PID_FILE"
}

wait_until_ready() {
    local log_offset="$1" start_s="$SECONDS" waited pid=""
    while true; do
        waited=$((SECONDS - start_s))
        pid="$(running_broker_pid)" || pid=""
        if [[ -z "$pid" ]]; then
            print_log_tail "$log_offset"
            rm -f -- "$PID_FILE"
            die "broker exited during startup (see $SERVER_LOG)"
        fi
        # Port open alone is not enough: the socket server binds before the
        # broker has caught up with its metadata and is unfenced.
        if is_port_open "$KAFKA_PORT" && ready_line_logged_since "$log_offset"; then
            say "up on 127.0.0.1:$KAFKA_PORT (pid $pid, ${waited}s)"
            return 0
        fi
        if ((waited >= KAFKA_START_TIMEOUT)); then
            print_log_tail "$log_offset"
            # A broker that never got ready would hold the ports; don't leave it behind.
            kill_broker "$pid"
            die "broker not ready after ${KAFKA_START_TIMEOUT}s (killed it; see $SERVER_LOG)"
        fi
        if ((waited > 0 && waited % 10 == 0)); then
            say "still waiting (${waited}s)"
            sleep 1
        else
            sleep 0.5
        fi
    done
}

start_broker() {
    local pid log_offset
    if pid="$(running_broker_pid)"; then
        say "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    rm -f -- "$PID_FILE"
    command -v java >/dev/null 2>&1 || die "java not found (Kafka $KAFKA_VERSION needs Java 11+)"
    ensure_kafka_fetched
    ensure_ports_free
    render_config "$TEMPLATE_DIR/server.properties" "$SERVER_PROPS"
    render_config "$TEMPLATE_DIR/log4j.properties" "$LOG4J_PROPS"
    format_storage_once
    log_offset="$(file_size "$SERVER_LOG")"
    say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
    launch_broker
    # Give the inner shell a moment to write the pidfile before we read it.
    local tries=0
    while [[ ! -s "$PID_FILE" ]] && ((tries < 50)); do
        sleep 0.1
        tries=$((tries + 1))
    done
    wait_until_ready "$log_offset"
}

stop_broker() {
    local pid start_s="$SECONDS"
    if ! pid="$(running_broker_pid)"; then
        rm -f -- "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping (pid $pid)"
    # SIGTERM = controlled shutdown: the log is flushed and the next start
    # skips log recovery.
    kill -TERM "$pid" 2>/dev/null || true
    while running_broker_pid >/dev/null; do
        if ((SECONDS - start_s >= KAFKA_STOP_TIMEOUT)); then
            # Costs ~15 s on the next start: the restarted controller still holds
            # the killed broker's registration (DUPLICATE_BROKER_REGISTRATION)
            # until broker.session.timeout.ms (9 s) expires.
            say "no exit after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
            kill_broker "$pid"
            break
        fi
        sleep 0.5
    done
    rm -f -- "$PID_FILE"
    say "stopped ($((SECONDS - start_s))s)"
}

print_status() {
    local pid
    if pid="$(running_broker_pid)"; then
        if is_port_open "$KAFKA_PORT"; then
            echo "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
        else
            echo "running (pid $pid), but 127.0.0.1:$KAFKA_PORT not open yet"
        fi
        return 0
    fi
    echo "stopped"
    return 3
}

# Refuse to rm -rf a KAFKA_DATA_DIR that does not look like ours (a typo in
# the env var must not delete someone's home directory).
looks_like_our_data_dir() {
    [[ -f "$SERVER_PROPS" || -f "$CLUSTER_ID_FILE" || -d "$LOG_DIRS" ]] \
        || [[ -z "$(find "$KAFKA_DATA_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -print -quit)" ]]
}

reset_broker() {
    stop_broker
    if [[ ! -d "$KAFKA_DATA_DIR" ]]; then
        say "nothing to reset"
        return 0
    fi
    looks_like_our_data_dir \
        || die "$KAFKA_DATA_DIR does not look like a kafka-local data dir; not deleting it"
    rm -rf -- "$KAFKA_DATA_DIR"
    say "deleted $KAFKA_DATA_DIR"
}

usage() {
    echo "usage: $0 {start|stop|status|restart|reset}" >&2
    exit 2
}

main() {
    [[ $# -eq 1 ]] || usage
    check_settings
    case "$1" in
    start)
        # A first start that cannot bind should not leave an empty data dir behind.
        if [[ ! -d "$KAFKA_DATA_DIR" ]]; then
            ensure_ports_free
        fi
        take_data_dir_lock create
        start_broker
        ;;
    stop)
        take_data_dir_lock existing
        stop_broker
        ;;
    status)
        print_status
        ;;
    restart)
        take_data_dir_lock create
        stop_broker
        start_broker
        ;;
    reset)
        take_data_dir_lock existing
        reset_broker
        ;;
    *)
        usage
        ;;
    esac
}

main "$@"
