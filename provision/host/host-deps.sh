#!/usr/bin/env bash
# Install the Debian/Ubuntu packages this checkout needs on the machine it runs on, only those
# missing. Usage: provision/host/host-deps.sh run|test|bench   (default: test)
#   run  : Java 17+ (Kafka broker), Maven (fetches the broker's jars), python3 venv support
#   test : the above + PostgreSQL server (integration tests) + shellcheck + Chromium and its
#          ChromeDriver (the dashboard's browser test; /usr/bin/chromium, /usr/bin/chromedriver)
#          and a font for its screenshots + prometheus (for promtool: the unit tests check the
#          lab's Prometheus config and alert rules with it)
#   bench: the above + wrk (load generator), nginx (nginx-light when the archive has it) and
#          redis-server (the Celery comparison's broker), for `make bench`
# Idempotent: prints "host packages: all present" and changes nothing when nothing is missing.
set -euo pipefail

want="${1:-test}"
case "$want" in
    run | test | bench) ;;
    *) echo "usage: provision/host/host-deps.sh run|test|bench" >&2; exit 2 ;;
esac

have_java17() {
    command -v java >/dev/null 2>&1 || return 1
    local major
    major="$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1)"
    [[ -n "$major" && "$major" -ge 17 ]]
}

have_initdb() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

have_venv() {
    local probe
    probe="$(mktemp -d)"
    python3 -m venv "$probe/v" >/dev/null 2>&1 && [[ -x "$probe/v/bin/pip" ]]
    local ok=$?
    rm -rf "$probe"
    return "$ok"
}

# nginx lives in /usr/sbin, which a non-root PATH may lack.
have_nginx() {
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]
}

# Debian's smallest nginx flavour when the archive offers it (it is enough for a proxy), else nginx.
nginx_package() {
    local candidate
    candidate="$(apt-cache policy nginx-light 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
    if [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
        echo nginx-light
    else
        echo nginx
    fi
}

missing=()
have_java17 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
have_venv || missing+=(python3-venv)
if [[ "$want" == test || "$want" == bench ]]; then
    have_initdb || missing+=(postgresql)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    # The browser test names these paths (it never lets Selenium fetch a browser or a driver).
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    # Without recommends no font comes along with chromium: its screenshots would show boxes.
    [[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi
if [[ "$want" == bench ]]; then
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    # Which nginx package exactly is decided after `apt-get update` (the lists may be empty now).
    have_nginx || missing+=(nginx)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "host packages: all present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "host-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi
sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "host-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
for i in "${!missing[@]}"; do
    if [[ "${missing[$i]}" == nginx ]]; then
        missing[i]="$(nginx_package)"
    fi
done
echo "host packages: installing ${missing[*]}"
# The postgresql package starts a cluster on :5432; tests start their own on a free port instead.
# Likewise nginx's, redis-server's and prometheus's postinst may start the system services (nginx
# :80, redis :6379, prometheus :9090) where an init system runs; benchmarks start private instances
# on free ports instead, and the lab forwards Prometheus to another port (lab.yml).
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "host packages: installed ${missing[*]}"
