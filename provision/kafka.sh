#!/usr/bin/env bash
# Apache Kafka: a KRaft broker+controller as the init.d service `kafka`, run by user kafka: alone on
# the sidecar, or one of the cluster's quorum (kafka1..3: LAB_KAFKA_HOSTS lists them all).
#   /opt/kafka/libs          the pinned broker's jars, copied from $LAB_ARTIFACTS/kafka-$KAFKA_VERSION/libs
#   /etc/kafka/*.properties  rendered from devops/kafka/ (the templates provision/host/kafka-local.sh uses)
#   /var/lib/kafka           data (kraft-combined-logs/) and cluster.id; formatted once
#   /var/log/kafka           server.log (log4j), kafka.out (JVM console)
#   /etc/init.d/kafka        from devops/init.d/kafka; enabled at boot, started when not running,
#                            restarted only when the jars or the config changed.
# Clients: 0.0.0.0:$KAFKA_PORT, advertised as this machine's lab address (LAB_SELF_HOST; else the
# sidecar's). Alone: node id 1, controller on 127.0.0.1. In a quorum: node id = the machine's place
# in LAB_KAFKA_HOSTS (1-based), controller on its lab address, the cluster id LAB_KAFKA_CLUSTER_ID
# (one id for all nodes), replication LAB_KAFKA_REPLICATION and min ISR LAB_KAFKA_MIN_ISR.
# Needs Java 17+ (provision/java.sh) and the cached jars (provision/host/fetch-kafka.sh, on the host).
# Idempotent: a second run changes nothing and restarts nothing.
set -euo pipefail

KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093

KAFKA_USER=kafka
KAFKA_HOME=/opt/kafka
KAFKA_CONF_DIR=/etc/kafka
KAFKA_DATA_DIR=/var/lib/kafka
KAFKA_LOG_DIR=/var/log/kafka

# shellcheck source=provision/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
need_settings LAB_KAFKA_VERSION
KAFKA_VERSION="$LAB_KAFKA_VERSION"
SELF_HOST="${LAB_SELF_HOST:-$LAB_SIDECAR_HOST}"
KAFKA_HOSTS="${LAB_KAFKA_HOSTS:-$SELF_HOST}"
KAFKA_REPLICATION="${LAB_KAFKA_REPLICATION:-1}"
KAFKA_MIN_ISR="${LAB_KAFKA_MIN_ISR:-1}"

TEMPLATES="$LAB_ROOT/devops/kafka"
INIT_SCRIPT_SRC="$LAB_ROOT/devops/init.d/kafka"
JARS_SRC="$LAB_ARTIFACTS/kafka-$KAFKA_VERSION/libs"
LOG_DIRS="$KAFKA_DATA_DIR/kraft-combined-logs"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster.id"

# Set by the steps below when the running broker must be restarted to pick up a change.
restart_needed=0

check_inputs() {
    [[ -f "$LAB_ARTIFACTS/kafka-$KAFKA_VERSION/.complete" ]] \
        || die "no Kafka $KAFKA_VERSION jars in $JARS_SRC (run provision/host/fetch-kafka.sh on the host)"
    [[ -f "$INIT_SCRIPT_SRC" && -f "$TEMPLATES/server.properties" ]] || die "LAB_ROOT=$LAB_ROOT is not the repository"
    command -v java >/dev/null 2>&1 || die "java not found (run provision/java.sh first)"
    # Clients reconnect to the advertised address: it must be one host, not a list or 0.0.0.0.
    [[ "$SELF_HOST" =~ ^[A-Za-z0-9._-]+$ && "$SELF_HOST" != 0.0.0.0 ]] \
        || die "LAB_SELF_HOST='$SELF_HOST' is not an address clients can reach"
    if [[ ! "$KAFKA_REPLICATION" =~ ^[1-9]$ || ! "$KAFKA_MIN_ISR" =~ ^[1-9]$ ]] || ((KAFKA_MIN_ISR > KAFKA_REPLICATION)); then
        die "LAB_KAFKA_MIN_ISR ($KAFKA_MIN_ISR) must be 1..LAB_KAFKA_REPLICATION ($KAFKA_REPLICATION)"
    fi
    quorum_layout
}

# NODE_ID, CONTROLLER_HOST, VOTERS and QUORUM_SIZE from LAB_KAFKA_HOSTS and this machine's address.
quorum_layout() {
    local hosts=() i
    IFS=', ' read -r -a hosts <<<"$KAFKA_HOSTS"
    QUORUM_SIZE=${#hosts[@]}
    ((QUORUM_SIZE >= KAFKA_REPLICATION)) \
        || die "LAB_KAFKA_REPLICATION=$KAFKA_REPLICATION needs as many brokers; LAB_KAFKA_HOSTS has $QUORUM_SIZE"
    if ((QUORUM_SIZE == 1)); then
        NODE_ID=1 CONTROLLER_HOST=127.0.0.1 VOTERS="1@127.0.0.1:$KAFKA_CONTROLLER_PORT"
        return 0
    fi
    NODE_ID="" VOTERS=""
    for i in "${!hosts[@]}"; do
        [[ "${hosts[i]}" =~ ^[A-Za-z0-9._-]+$ ]] || die "LAB_KAFKA_HOSTS: '${hosts[i]}' is not a host"
        VOTERS+="${VOTERS:+,}$((i + 1))@${hosts[i]}:$KAFKA_CONTROLLER_PORT"
        [[ "${hosts[i]}" == "$SELF_HOST" ]] && NODE_ID=$((i + 1))
    done
    [[ -n "$NODE_ID" ]] || die "this machine ($SELF_HOST) is not in LAB_KAFKA_HOSTS ($KAFKA_HOSTS)"
    [[ "${LAB_KAFKA_CLUSTER_ID:-}" =~ ^[A-Za-z0-9_-]{22}$ ]] \
        || die "a quorum of $QUORUM_SIZE needs LAB_KAFKA_CLUSTER_ID (22 characters, the same on every node)"
    CONTROLLER_HOST="$SELF_HOST"
}

# "name size" per jar, sorted: what decides whether /opt/kafka/libs must be copied again.
jar_listing() {
    find "$1" -maxdepth 1 -type f -name '*.jar' -printf '%f %s\n' 2>/dev/null | LC_ALL=C sort
}

install_jars() {
    local dest="$KAFKA_HOME/libs" staging
    if [[ -d "$dest" && "$(jar_listing "$JARS_SRC")" == "$(jar_listing "$dest")" ]]; then
        return 0
    fi
    ensure_dir "$KAFKA_HOME" 755 root:root
    # Copied next to the final dir, then swapped in: never a half-filled libs/.
    staging="$(mktemp -d "$KAFKA_HOME/.libs.XXXXXX")"
    cp -- "$JARS_SRC"/*.jar "$staging/"
    chmod 0644 "$staging"/*.jar
    chmod 0755 "$staging"
    rm -rf -- "$dest"
    mv -T -- "$staging" "$dest"
    say "installed Kafka $KAFKA_VERSION jars in $dest ($(find "$dest" -name '*.jar' | wc -l) jars)"
    restart_needed=1
}

install_config() {
    ensure_dir "$KAFKA_CONF_DIR" 755 root:root
    if render_template "$TEMPLATES/server.properties" "$KAFKA_CONF_DIR/server.properties" 644 root:root \
        KAFKA_LISTEN_HOST=0.0.0.0 \
        KAFKA_ADVERTISED_HOST="$SELF_HOST" \
        KAFKA_NODE_ID="$NODE_ID" \
        KAFKA_CONTROLLER_HOST="$CONTROLLER_HOST" \
        KAFKA_QUORUM_VOTERS="$VOTERS" \
        KAFKA_REPLICATION="$KAFKA_REPLICATION" \
        KAFKA_MIN_ISR="$KAFKA_MIN_ISR" \
        KAFKA_PORT="$KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" \
        KAFKA_DATA_DIR="$KAFKA_DATA_DIR"; then
        restart_needed=1
    fi
    # The log4j template's one placeholder is the directory of server.log.
    if render_template "$TEMPLATES/log4j.properties" "$KAFKA_CONF_DIR/log4j.properties" 644 root:root \
        KAFKA_LOG_DIR="$KAFKA_LOG_DIR"; then
        restart_needed=1
    fi
}

as_kafka() {
    runuser -u "$KAFKA_USER" -- "$@"
}

run_storage_tool() {
    as_kafka java -cp "$KAFKA_HOME/libs/*" -Dlog4j.configuration="file:$KAFKA_CONF_DIR/log4j.properties" \
        kafka.tools.StorageTool "$@"
}

# KRaft refuses to start on unformatted log dirs. Format exactly once; the cluster id is kept so
# a lost meta.properties is re-created with the id the data was written under. The id file is in
# kafka's own directory, so it is written and read as kafka: root following a link planted there
# would write (or read) wherever it points.
format_storage_once() {
    local cluster_id out
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    cluster_id="$(as_kafka head -c 64 "$CLUSTER_ID_FILE" 2>/dev/null || true)"
    # A quorum's nodes must all carry the one id they were given.
    ((QUORUM_SIZE == 1)) || cluster_id="$LAB_KAFKA_CLUSTER_ID"
    if [[ ! "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]]; then
        cluster_id="$(run_storage_tool random-uuid)" || die "could not generate a cluster id"
        # shellcheck disable=SC2016  # $0 and $1 belong to the inner shell
        as_kafka sh -c 'umask 022 && echo "$1" >"$0"' "$CLUSTER_ID_FILE" "$cluster_id" \
            || die "could not write $CLUSTER_ID_FILE"
    fi
    out="$(run_storage_tool format -t "$cluster_id" -c "$KAFKA_CONF_DIR/server.properties" --ignore-formatted 2>&1)" \
        || die "formatting $LOG_DIRS failed: $out"
    say "formatted $LOG_DIRS (cluster id $cluster_id)"
}

open_firewall_port() {
    # RHEL 8/9 with firewalld: clients come from the app machines, controllers from each other.
    # (No firewall on the Debian lab.)
    command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1 || return 0
    local port ports=("$KAFKA_PORT")
    ((QUORUM_SIZE == 1)) || ports+=("$KAFKA_CONTROLLER_PORT")
    for port in "${ports[@]}"; do
        firewall-cmd -q --query-port="$port/tcp" && continue
        firewall-cmd -q --permanent --add-port="$port/tcp"
        firewall-cmd -q --add-port="$port/tcp"
        say "opened $port/tcp in firewalld"
    done
}

main() {
    require_root
    detect_os
    check_inputs
    ensure_system_user "$KAFKA_USER" "$KAFKA_DATA_DIR"
    ensure_dir "$KAFKA_DATA_DIR" 750 "$KAFKA_USER:$KAFKA_USER"
    ensure_dir "$KAFKA_LOG_DIR" 755 "$KAFKA_USER:$KAFKA_USER"
    install_jars
    install_config
    format_storage_once
    # A changed init script takes effect at the next start; it is no reason to restart the broker.
    install_file "$INIT_SCRIPT_SRC" /etc/init.d/kafka 755 root:root || true
    service_enable kafka
    open_firewall_port
    if ! service kafka status >/dev/null 2>&1; then
        service_start kafka
    elif ((restart_needed)); then
        say "config or jars changed: restarting kafka"
        service kafka restart || die "service kafka restart failed"
    fi
}

main "$@"
