#!/usr/bin/env bash
# Run a single-node KRaft Kafka broker on 127.0.0.1 for local runs and tests: this script fetches,
# configures and formats it in its data dir; the lab's init script (devops/init.d/kafka) starts,
# stops and checks it, as it does the sidecar's broker.
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
INIT_SCRIPT="$REPO_ROOT/devops/init.d/kafka"

# Everything a broker writes lives in its data dir.
SERVER_PROPS="$KAFKA_DATA_DIR/server.properties"
LOG4J_PROPS="$KAFKA_DATA_DIR/log4j.properties"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster.id"
SERVER_LOG="$KAFKA_DATA_DIR/server.log"
LOG_DIRS="$KAFKA_DATA_DIR/kraft-combined-logs"

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
        -e "s|@KAFKA_CONTROLLER_HOST@|127.0.0.1|g" \
        -e "s|@KAFKA_NODE_ID@|1|g" \
        -e "s|@KAFKA_QUORUM_VOTERS@|1@127.0.0.1:$(sed_escape "$KAFKA_CONTROLLER_PORT")|g" \
        -e "s|@KAFKA_REPLICATION@|1|g" \
        -e "s|@KAFKA_MIN_ISR@|1|g" \
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
            die "127.0.0.1:$port is already in use by another process (not this broker: it is not running)"
        fi
    done
}

# Start, stop and status are the lab's init script's (devops/init.d/kafka), pointed at this broker:
# its settings file holds the paths of the data dir and this user as the broker's user.
init_script() {
    local defaults="$KAFKA_DATA_DIR/init.defaults"
    {
        echo "# Written by provision/host/kafka-local.sh on each call: devops/init.d/kafka's settings."
        printf '%s=%q\n' KAFKA_USER "$(id -un)" KAFKA_HOME "$KAFKA_HOME_DIR" \
            KAFKA_CONF_DIR "$KAFKA_DATA_DIR" KAFKA_LOG_DIR "$KAFKA_DATA_DIR" PID_DIR "$KAFKA_DATA_DIR" \
            LOCK_FILE "$KAFKA_DATA_DIR/init.lock" SUBSYS_LOCK "" KAFKA_HEAP_OPTS "$KAFKA_HEAP_OPTS" \
            KAFKA_START_TIMEOUT "$KAFKA_START_TIMEOUT" KAFKA_STOP_TIMEOUT "$KAFKA_STOP_TIMEOUT"
    } >"$defaults.tmp"
    mv -f -- "$defaults.tmp" "$defaults"  # whole, for a concurrent status
    # 8>&-: the broker must not inherit the data dir lock, or the next start/stop would wait on it.
    KAFKA_DEFAULTS="$defaults" bash "$INIT_SCRIPT" "$@" 8>&-
}

start_broker() {
    if [[ -f "$KAFKA_DATA_DIR/init.defaults" ]] && init_script status >/dev/null; then
        say "already running on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    command -v java >/dev/null 2>&1 || die "java not found (Kafka $KAFKA_VERSION needs Java 11+)"
    ensure_kafka_fetched
    ensure_ports_free
    render_config "$TEMPLATE_DIR/server.properties" "$SERVER_PROPS"
    render_config "$TEMPLATE_DIR/log4j.properties" "$LOG4J_PROPS"
    format_storage_once
    say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
    if ! init_script start; then
        # The init script leaves a slow broker running (status/stop still work); a test or a drill
        # that gives up must not leave a JVM holding the ports.
        init_script stop >/dev/null 2>&1 || true
        die "the broker did not start (stopped it; see $SERVER_LOG)"
    fi
}

stop_broker() {
    [[ -f "$SERVER_PROPS" ]] || { say "not running"; return 0; }
    init_script stop || die "the broker did not stop (see $SERVER_LOG)"
}

print_status() {
    [[ -f "$SERVER_PROPS" ]] || { echo "stopped"; return 3; }
    init_script status
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
