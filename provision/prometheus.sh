#!/usr/bin/env bash
# Prometheus on the sidecar: Debian's `prometheus` package, run by the package's own init.d script
# (/etc/init.d/prometheus, start-stop-daemon --chuid) as the package's unprivileged user
# `prometheus`, enabled at boot, on port 9090 of every interface: the lab's ($LAB_SIDECAR_HOST) and
# the one the provider forwards lab.yml's host port to (docker: the default bridge's, not the lab
# network's). It scrapes the job API's /metrics through nginx on the app machine
# ($LAB_APP_HOST:80) and itself every 15 s, and evaluates the lab's alert rules.
#   /etc/prometheus/prometheus.yml, alerts.yml  rendered from devops/prometheus/, checked with
#                                `promtool check rules` and `promtool check config` before they
#                                replace the live files (a rejected pair leaves those alone and
#                                stops here with promtool's message); applied by a reload (SIGHUP),
#                                which must then report success
#   /etc/default/prometheus      the server's flags (devops/prometheus/prometheus.default); a change
#                                restarts it
#   /var/lib/prometheus/metrics2 the time series database (the package's, the prometheus user's)
#   /var/log/prometheus/prometheus.log  the server's output (root's directory: the init script opens it)
# RHEL family (the VM providers' sidecar): no default repository ships Prometheus; this stops with
# one line (docs/metrics.md). Idempotent: a second run changes nothing and restarts nothing.
# Settings (lab.yml, resolved; checked here):
#   LAB_ALERT_OLDEST_QUEUED_SECONDS  JoblabOldQueuedJob fires above this queue age (s)
set -euo pipefail

PROM_PORT=9090
CONF_DIR=/etc/prometheus
DEFAULTS=/etc/default/prometheus
LOG_FILE=/var/log/prometheus/prometheus.log
# Seconds to wait for the server to answer /-/ready after a start, and for a reload to land.
READY_TIMEOUT=90

# shellcheck source=provision/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
need_settings LAB_ALERT_OLDEST_QUEUED_SECONDS

TEMPLATES="$LAB_ROOT/devops/prometheus"
PID_FILE=/run/prometheus/prometheus.pid
# Where it is scraped and checked: the sidecar's lab address.
SELF_ADDRESS="$LAB_SIDECAR_HOST:$PROM_PORT"
BASE_URL="http://$SELF_ADDRESS"

check_settings() {
    [[ "$LAB_ALERT_OLDEST_QUEUED_SECONDS" =~ ^[1-9][0-9]{0,5}$ ]] \
        || die "LAB_ALERT_OLDEST_QUEUED_SECONDS must be 1-999999 seconds (got '$LAB_ALERT_OLDEST_QUEUED_SECONDS')"
    # One host each (Prometheus scrapes both): no list, not 0.0.0.0.
    local name
    for name in LAB_SIDECAR_HOST LAB_APP_HOST; do
        [[ "${!name}" =~ ^[A-Za-z0-9._-]+$ && "${!name}" != 0.0.0.0 ]] \
            || die "$name='${!name}' is not one host Prometheus can scrape"
    done
    [[ -d "$TEMPLATES" ]] || die "LAB_ROOT=$LAB_ROOT is not the repository (no devops/prometheus)"
}

install_prometheus() {
    if [[ "$OS_FAMILY" == rhel ]]; then
        die "no RHEL-family default repository ships Prometheus (Debian's archive does); on the VM providers take prometheus out of the sidecar's provision list in lab.yml (docs/metrics.md)"
    fi
    # curl and ss: the readiness and reload checks below.
    pkg_install prometheus curl iproute2
}

# Render prometheus.yml and alerts.yml into a temp dir, check them with promtool there (the
# config names alerts.yml relative to itself, so check config reads the new rules too), then
# install them: the rules first, so the live config never names rules that are not there yet.
# Returns 0 when either file changed.
install_config() {
    local tmpdir out rc=1
    tmpdir="$(mktemp -d)"
    render_template "$TEMPLATES/alerts.yml" "$tmpdir/alerts.yml" 644 root:root \
        "OLDEST_QUEUED_SECONDS=$LAB_ALERT_OLDEST_QUEUED_SECONDS" >/dev/null || true
    render_template "$TEMPLATES/prometheus.yml" "$tmpdir/prometheus.yml" 644 root:root \
        "SELF_TARGET=$SELF_ADDRESS" "APP_TARGET=$LAB_APP_HOST:80" >/dev/null || true
    if cmp -s "$tmpdir/alerts.yml" "$CONF_DIR/alerts.yml" && cmp -s "$tmpdir/prometheus.yml" "$CONF_DIR/prometheus.yml"; then
        rm -rf "$tmpdir"
        return 1
    fi
    if ! out="$(promtool check rules "$tmpdir/alerts.yml" 2>&1 && promtool check config "$tmpdir/prometheus.yml" 2>&1)"; then
        rm -rf "$tmpdir"
        die "promtool rejected the new config; $CONF_DIR left as it was:
$out"
    fi
    install_file "$tmpdir/alerts.yml" "$CONF_DIR/alerts.yml" 644 root:root && rc=0
    install_file "$tmpdir/prometheus.yml" "$CONF_DIR/prometheus.yml" 644 root:root && rc=0
    rm -rf "$tmpdir"
    return "$rc"
}

# A metric of the server's own (a sample line's value), empty when it does not answer.
own_metric() {
    curl -fsS --max-time 5 "$BASE_URL/metrics" 2>/dev/null | awk -v m="$1" '$1 == m { print $2; exit }'
}

# The last lines of the server's log, after a failure.
log_tail() {
    echo "--- last lines of $LOG_FILE ---"
    tail -n 20 "$LOG_FILE" 2>/dev/null || true
}

# The server at $BASE_URL is the init script's: ready, and the process listening on the port is
# the one in its pidfile (root's file in root's /run/prometheus). Another Prometheus holding the
# port, e.g. one a stop that failed left running, does not count.
serves_as_ours() {
    local pid
    curl -fsS --max-time 5 -o /dev/null "$BASE_URL/-/ready" 2>/dev/null || return 1
    pid="$(head -c 32 "$PID_FILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && ss -ltnpH "sport = :$PROM_PORT" | grep -qF "pid=$pid,"
}

wait_ready() {
    local start_s="$SECONDS"
    until serves_as_ours; do
        if ((SECONDS - start_s >= READY_TIMEOUT)); then
            die "prometheus (pid $(head -c 32 "$PID_FILE" 2>/dev/null)) is not serving $BASE_URL after $READY_TIMEOUT s; listening on :$PROM_PORT: $(ss -ltnpH "sport = :$PROM_PORT")
$(log_tail)"
        fi
        sleep 1
    done
}

# SIGHUP (the init script checks the config with promtool first), then wait until the server says
# it reloaded: its last successful reload's time moves, and the reload counts as successful.
reload_and_check() {
    local before start_s="$SECONDS"
    before="$(own_metric prometheus_config_last_reload_success_timestamp_seconds)"
    service prometheus reload >/dev/null || die "service prometheus reload failed"
    while [[ "$(own_metric prometheus_config_last_reload_success_timestamp_seconds)" == "$before" ]]; do
        if [[ "$(own_metric prometheus_config_last_reload_successful)" == 0 ]] || ((SECONDS - start_s >= READY_TIMEOUT)); then
            die "prometheus did not take the new config
$(log_tail)"
        fi
        sleep 1
    done
    say "prometheus reloaded its config"
}

main() {
    local config_changed=0 flags_changed=0
    require_root
    detect_os
    check_settings
    install_prometheus
    install_config && config_changed=1
    render_template "$TEMPLATES/prometheus.default" "$DEFAULTS" 644 root:root "LISTEN=0.0.0.0:$PROM_PORT" && flags_changed=1
    service_enable prometheus
    if ! service prometheus status >/dev/null 2>&1; then
        service_start prometheus
    elif ((flags_changed)) || ! serves_as_ours; then
        # Flags are read at start only (the package's first start ran without any of ours).
        say "restarting prometheus (flags: $DEFAULTS)"
        service prometheus restart >/dev/null || die "service prometheus restart failed
$(log_tail)"
    elif ((config_changed)); then
        wait_ready
        reload_and_check
    fi
    wait_ready
}

main "$@"
