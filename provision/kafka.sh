#!/usr/bin/env bash
# Apache Kafka on the sidecar: single-node KRaft broker as the init.d service `kafka`, run by user kafka.
#   /opt/kafka/libs          the pinned broker's jars, copied from $LAB_ARTIFACTS/kafka-$KAFKA_VERSION/libs
#   /etc/kafka/*.properties  rendered from devops/kafka/ (the templates provision/host/kafka-local.sh uses)
#   /var/lib/kafka           data (kraft-combined-logs/) and cluster.id; formatted once
#   /var/log/kafka           server.log (log4j), kafka.out (JVM console)
#   /etc/init.d/kafka        from devops/init.d/kafka; enabled at boot, started when not running,
#                            restarted only when the jars or the config changed.
# Clients: 0.0.0.0:$KAFKA_PORT, advertised as $LAB_SIDECAR_HOST:$KAFKA_PORT; controller on 127.0.0.1.
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
    [[ "$LAB_SIDECAR_HOST" =~ ^[A-Za-z0-9._-]+$ && "$LAB_SIDECAR_HOST" != 0.0.0.0 ]] \
        || die "LAB_SIDECAR_HOST='$LAB_SIDECAR_HOST' is not an address clients can reach"
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
        KAFKA_ADVERTISED_HOST="$LAB_SIDECAR_HOST" \
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
    # RHEL 8/9 with firewalld: clients come from the app machine. (No firewall on the Debian lab.)
    command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1 || return 0
    firewall-cmd -q --query-port="$KAFKA_PORT/tcp" && return 0
    firewall-cmd -q --permanent --add-port="$KAFKA_PORT/tcp"
    firewall-cmd -q --add-port="$KAFKA_PORT/tcp"
    say "opened $KAFKA_PORT/tcp in firewalld"
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
