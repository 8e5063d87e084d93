#!/usr/bin/env bash
# nginx on the app machine: :80 -> gunicorn on 127.0.0.1:8000, config from devops/nginx.conf. On the
# cluster's load balancer (LAB_ROLE=lb): the same config, its upstream the app nodes' nginx
# (LAB_APP_HOSTS, port 80), kept by devops/joblab-lb (installed as /usr/local/sbin/joblab-lb), whose
# active health checks run as the service joblab-lb (devops/init.d/joblab-lb).
#   Debian: the distro's nginx package. RHEL/CentOS: nginx.org's packages (devops/nginx.repo).
# A new config is tested (`nginx -t -c <temp file>`) before it replaces /etc/nginx/nginx.conf; a
# rejected one leaves the running config alone and stops here with nginx's message. nginx is
# reloaded only when the config changed. On RHEL with SELinux enforcing, nginx is allowed to
# connect to gunicorn (httpd_can_network_connect). GET /metrics is served to the lab's machines
# only: LAB_SIDECAR_HOST (Prometheus), the app machines and 127.0.0.1, each by its address (a name is
# resolved now; re-provision when its address changes). Run as root.
# Settings (lab.yml, resolved; checked here):
#   LAB_SUBMIT_RATE    POST /v1/jobs per API token, sustained: N r/s or N r/m
#   LAB_SUBMIT_BURST   ...and how many more at once before nginx answers 429
#   LAB_PROXY_CONNECT_TIMEOUT  seconds nginx waits for gunicorn to accept
#   LAB_PROXY_READ_TIMEOUT     seconds nginx waits for gunicorn's answer; must be
#                              longer than LAB_GUNICORN_TIMEOUT, so gunicorn answers first
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

DEVOPS="$LAB_ROOT/devops"
NGINX_CONF=/etc/nginx/nginx.conf
# Generous by default: the lab's deploy test (40 submissions/s from one token, paced) and
# the fault drills (20/s plus bursts of probes and the API fuzzer) must never meet the limit.
need_settings LAB_SUBMIT_RATE LAB_SUBMIT_BURST LAB_PROXY_CONNECT_TIMEOUT LAB_PROXY_READ_TIMEOUT LAB_GUNICORN_TIMEOUT \
    LAB_NGINX_EL6_RPM LAB_NGINX_KEY_FINGERPRINT

check_settings() {
    [[ "$LAB_SUBMIT_RATE" =~ ^[1-9][0-9]{0,5}r/[sm]$ ]] \
        || die "LAB_SUBMIT_RATE must be like 100r/s or 600r/m (got '$LAB_SUBMIT_RATE')"
    [[ "$LAB_SUBMIT_BURST" =~ ^(0|[1-9][0-9]{0,5})$ ]] \
        || die "LAB_SUBMIT_BURST must be a whole number (got '$LAB_SUBMIT_BURST')"
    local name
    for name in LAB_PROXY_CONNECT_TIMEOUT LAB_PROXY_READ_TIMEOUT LAB_GUNICORN_TIMEOUT; do
        [[ "${!name}" =~ ^[1-9][0-9]{0,3}$ ]] || die "$name must be 1-9999 seconds (got '${!name}')"
    done
    ((LAB_PROXY_READ_TIMEOUT > LAB_GUNICORN_TIMEOUT)) \
        || die "LAB_PROXY_READ_TIMEOUT ($LAB_PROXY_READ_TIMEOUT) must be longer than LAB_GUNICORN_TIMEOUT ($LAB_GUNICORN_TIMEOUT): gunicorn must answer (or replace a stuck worker) before nginx gives up"
}

# The addresses of a host given as an IP (printed as is) or a name (resolved, every address), one
# a line; dies when there is none.
host_addresses() {
    local host="$1" found
    if [[ "$host" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || ( "$host" == *:* && "$host" =~ ^[0-9A-Fa-f:.]+$ ) ]]; then
        echo "$host"
        return 0
    fi
    [[ "$host" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || die "not a host name or address: '$host'"
    found="$(getent ahosts "$host" | awk '{ print $1 }' | sort -u)"
    [[ -n "$found" ]] || die "cannot resolve '$host' (nginx allows /metrics by address)"
    echo "$found"
}

# nginx `allow` lines for /metrics: the sidecar (Prometheus scrapes from there), the app machine
# itself and loopback; each address once, in that order.
# (Its caller checks its status: die in a command substitution ends only that subshell.)
metrics_allow() {
    local sidecar app="" one hosts=() addr out="" seen=" "
    sidecar="$(host_addresses "$LAB_SIDECAR_HOST")" || return 1
    IFS=', ' read -r -a hosts <<<"${LAB_APP_HOSTS:-$LAB_APP_HOST}"
    for one in "${hosts[@]}"; do
        app+="${app:+$'\n'}$(host_addresses "$one")" || return 1
    done
    while read -r addr; do
        [[ "$seen" == *" $addr "* ]] && continue
        seen+="$addr "
        out+="${out:+$'\n            '}allow $addr;"
    done <<<"$sidecar"$'\n'"$app"$'\n'127.0.0.1
    printf '%s' "$out"
}

# CentOS 6: nginx.org's el6 RPM and signing key from the artifact cache (`make lab` checks both
# on the host; lab.yml pins the RPM's name and the key's fingerprint), so the step does not
# depend on nginx.org still serving its el6 repository. The RPM's signature is checked with
# that key before anything is installed.
install_cached_el6_rpm() {
    local rpm_file="$LAB_ARTIFACTS/nginx/$LAB_NGINX_EL6_RPM" key="$LAB_ARTIFACTS/nginx/nginx_signing.key" keyid check
    # rpm names an imported key gpg-pubkey-<last 8 hex digits of its fingerprint>.
    keyid="$(tr 'A-F' 'a-f' <<<"${LAB_NGINX_KEY_FINGERPRINT: -8}")"
    rpm -q "gpg-pubkey-$keyid" >/dev/null 2>&1 || rpm --import "$key" || die "rpm --import $key failed"
    rpm -q "gpg-pubkey-$keyid" >/dev/null 2>&1 \
        || die "$key is not nginx's key $LAB_NGINX_KEY_FINGERPRINT (no gpg-pubkey-$keyid after importing it)"
    check="$(rpm -K "$rpm_file" 2>&1)" || true
    [[ "$check" == *"pgp"*"OK"* && "$check" != *"NOT OK"* && "$check" != *"MISSING"* ]] \
        || die "$LAB_NGINX_EL6_RPM is not signed by nginx's key: $check"
    yum install -y -q --nogpgcheck "$rpm_file" || die "yum install $rpm_file failed"
}

install_nginx() {
    if [[ "$OS_FAMILY" == rhel && "$OS_MAJOR" == 6 && -f "$LAB_ARTIFACTS/nginx/$LAB_NGINX_EL6_RPM" ]]; then
        # From the cache, now and on every later run: no nginx.org repository added to yum.
        rpm -q nginx >/dev/null 2>&1 || install_cached_el6_rpm
        return 0
    fi
    if [[ "$OS_FAMILY" == rhel ]]; then
        install_file "$DEVOPS/nginx.repo" /etc/yum.repos.d/nginx.repo 644 root:root || true
    fi
    pkg_install nginx
}

# Render the config to a temp file, test it, install it. Returns 0 when the config changed.
install_nginx_conf() {
    local user pid tmpdir out allow servers rc=1
    # The packages' own worker user and pid file (their init scripts read the pid path).
    if [[ "$OS_FAMILY" == rhel ]]; then
        user=nginx pid=/var/run/nginx.pid
    else
        user=www-data pid=/run/nginx.pid
    fi
    allow="$(metrics_allow)" || exit 1
    if [[ "${LAB_ROLE:-app}" == lb ]]; then
        servers="include $LB_UPSTREAM;"
    else
        servers="server 127.0.0.1:8000;"
    fi
    tmpdir="$(mktemp -d)"
    render_template "$DEVOPS/nginx.conf" "$tmpdir/nginx.conf" 644 root:root \
        "NGINX_USER=$user" "NGINX_PID=$pid" "LISTEN=0.0.0.0:80" "UPSTREAM_SERVERS=$servers" \
        "NGINX_ERROR_LOG=/var/log/nginx/error.log" "NGINX_ACCESS_LOG=/var/log/nginx/access.log joblab" "HTTP_EXTRA=" \
        "SUBMIT_RATE=$LAB_SUBMIT_RATE" "SUBMIT_BURST=$LAB_SUBMIT_BURST" \
        "PROXY_CONNECT_TIMEOUT=$LAB_PROXY_CONNECT_TIMEOUT" "PROXY_READ_TIMEOUT=$LAB_PROXY_READ_TIMEOUT" \
        "METRICS_ALLOW=$allow" >/dev/null || true
    if cmp -s "$tmpdir/nginx.conf" "$NGINX_CONF"; then
        rm -rf "$tmpdir"
        return 1
    fi
    if ! out="$(nginx -t -q -c "$tmpdir/nginx.conf" 2>&1)"; then
        rm -rf "$tmpdir"
        die "nginx -t rejected the new config; $NGINX_CONF left as it was:
$out"
    fi
    install_file "$tmpdir/nginx.conf" "$NGINX_CONF" 644 root:root && rc=0
    rm -rf "$tmpdir"
    return "$rc"
}

# RHEL-FACTS §5: httpd_t may not connect to 127.0.0.1:8000 unless this boolean is on (502 otherwise).
allow_proxy_connect_selinux() {
    [[ "$OS_FAMILY" == rhel ]] || return 0
    command -v getenforce >/dev/null 2>&1 || return 0
    [[ "$(getenforce)" == Enforcing ]] || return 0
    getsebool httpd_can_network_connect 2>/dev/null | grep -q -- '--> on' && return 0
    say "SELinux: setsebool -P httpd_can_network_connect 1 (nginx -> gunicorn)"
    setsebool -P httpd_can_network_connect 1 || die "setsebool httpd_can_network_connect failed"
}

# The lb's list of app nodes (host:80 a line) and its upstream file, before the config that
# includes it is tested. Nodes an operator drained stay drained if they are still app nodes.
setup_lb() {
    local hosts=() h tmp
    pkg_install curl # the health checks' client
    install_file "$DEVOPS/joblab-lb" /usr/local/sbin/joblab-lb 755 root:root && LB_WATCH_CHANGED=1
    ensure_dir "$LB_STATE" 755 root:root
    IFS=', ' read -r -a hosts <<<"${LAB_APP_HOSTS:-}"
    ((${#hosts[@]})) || die "LAB_APP_HOSTS is empty: the load balancer has no app node"
    tmp="$(mktemp)"
    for h in "${hosts[@]}"; do
        [[ "$h" =~ ^[A-Za-z0-9._-]+$ ]] || die "LAB_APP_HOSTS: '$h' is not a host"
        echo "$h:80"
    done >"$tmp"
    install_file "$tmp" "$LB_STATE/nodes" 644 root:root || true
    rm -f "$tmp"
    if [[ -f "$LB_STATE/drained" ]]; then
        tmp="$(mktemp)"
        grep -xF -f "$LB_STATE/nodes" "$LB_STATE/drained" >"$tmp" || true
        install_file "$tmp" "$LB_STATE/drained" 644 root:root || true
        rm -f "$tmp"
    fi
    /usr/local/sbin/joblab-lb render
}

LB_STATE=/etc/nginx/joblab-lb
LB_UPSTREAM=/etc/nginx/joblab-upstream.conf
LB_WATCH_CHANGED=0

# The lb's active health checks (joblab-lb watch) as a service, once nginx runs: restarted when
# its program or init script changed, else left running.
start_lb_watch() {
    install_file "$DEVOPS/init.d/joblab-lb" /etc/init.d/joblab-lb 755 root:root && LB_WATCH_CHANGED=1
    service_enable joblab-lb
    if ! service joblab-lb status >/dev/null 2>&1; then
        service_start joblab-lb
    elif [[ $LB_WATCH_CHANGED -eq 1 ]]; then
        service joblab-lb restart >/dev/null || die "service joblab-lb restart failed"
        say "joblab-lb watch restarted"
    fi
}

require_root
detect_os
check_settings
install_nginx
[[ "${LAB_ROLE:-app}" != lb ]] || setup_lb
conf_changed=0
install_nginx_conf && conf_changed=1
# Not included by our nginx.conf; removed so nobody mistakes it for the live site.
if [[ -L /etc/nginx/sites-enabled/default ]]; then
    rm -f /etc/nginx/sites-enabled/default
    say "removed /etc/nginx/sites-enabled/default (not used: the whole config is $NGINX_CONF)"
fi
allow_proxy_connect_selinux
service_enable nginx
if ! service nginx status >/dev/null 2>&1; then
    service_start nginx
elif [[ $conf_changed -eq 1 ]]; then
    service nginx reload >/dev/null || die "service nginx reload failed"
    say "nginx reloaded"
fi
[[ "${LAB_ROLE:-app}" != lb ]] || start_lb_watch
