#!/usr/bin/env bash
# Shared by every provision/*.sh script: logging, OS detection (once), idempotent helpers.
# Sourced, never run. Every helper changes the machine only when it differs from the goal.
#
# Contract (set by the Vagrantfile, `fab provision` or the container's settings file):
#   lab.yml's settings (LAB_APP_USER, LAB_ENV_NAME, ...), resolved: a script names those it uses
#                   with need_settings and never gives one a default of its own
#   LAB_ROOT        the repository as seen on the machine           (/vagrant)
#   LAB_ARTIFACTS   the artifact cache (Kafka jars, app wheel, ...)  ($LAB_ROOT/.cache/artifacts)
#   LAB_SIDECAR_HOST, LAB_APP_HOST   addresses of the two machines
#   LAB_HANDOFF     host-shared dir, 0700, where the sidecar leaves the DB password for the app
#                   ($LAB_ROOT/.vagrant/lab-secrets; gitignored, never printed)

LAB_ROOT="${LAB_ROOT:-/vagrant}"
LAB_ARTIFACTS="${LAB_ARTIFACTS:-$LAB_ROOT/.cache/artifacts}"
if [[ -n "${LAB_ENV_NAME:-}" ]]; then
    export LAB_ENV_PREFIX="/usr/local/envs/$LAB_ENV_NAME"
fi
LAB_SIDECAR_HOST="${LAB_SIDECAR_HOST:-sidecar}"
LAB_APP_HOST="${LAB_APP_HOST:-app}"
LAB_HANDOFF="${LAB_HANDOFF:-$LAB_ROOT/.vagrant/lab-secrets}"
export LAB_ETC=/etc/joblab

# shellcheck source=provision/lib/say.sh
source "$(dirname "${BASH_SOURCE[0]}")/say.sh"

# need_settings NAME...: stop with one line unless every named lab.yml setting arrived non-empty.
need_settings() {
    local name missing=()
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "settings not given: ${missing[*]} (provisioning gets lab.yml's resolved settings from vagrant provision or fab provision)"
}

# OS family, detected once: debian (Debian/Ubuntu) or rhel (RHEL/CentOS/Rocky/Alma/Oracle).
detect_os() {
    [[ -n "${OS_FAMILY:-}" ]] && return 0
    [[ -r /etc/os-release ]] || [[ -r /etc/redhat-release ]] || die "cannot tell the OS (no /etc/os-release)"
    local id="" like="" version=""
    if [[ -r /etc/os-release ]]; then
        # shellcheck disable=SC1091
        id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck disable=SC1091
        like="$(. /etc/os-release && echo "${ID_LIKE:-}")"
        # shellcheck disable=SC1091
        version="$(. /etc/os-release && echo "${VERSION_ID:-}")"
    else
        # CentOS 6 has no os-release: "CentOS release 6.10 (Final)".
        id=rhel
        version="$(sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' /etc/redhat-release)"
    fi
    case " $id $like " in
        *" debian "* | *" ubuntu "*) OS_FAMILY=debian ;;
        *" rhel "* | *" centos "* | *" fedora "* | *" rocky "* | *" almalinux "*) OS_FAMILY=rhel ;;
        *) die "unsupported OS '$id' (supported: Debian/Ubuntu, RHEL/CentOS family)" ;;
    esac
    OS_MAJOR="${version%%.*}"
    export OS_FAMILY OS_MAJOR
}

require_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (use sudo)"
}

_apt_updated=0
# Install packages that are missing; a no-op (no apt-get update either) when all are present.
pkg_install() {
    detect_os
    local missing=() p
    for p in "$@"; do
        if [[ "$OS_FAMILY" == debian ]]; then
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        else
            rpm -q "$p" >/dev/null 2>&1 || missing+=("$p")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing ${missing[*]}"
    if [[ "$OS_FAMILY" == debian ]]; then
        export DEBIAN_FRONTEND=noninteractive
        if [[ $_apt_updated -eq 0 ]]; then
            apt-get update -qq || die "apt-get update failed"
            _apt_updated=1
        fi
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    else
        yum install -y -q "${missing[@]}" || die "yum install ${missing[*]} failed"
    fi
}

# octal MODE — "0644" and "644" alike, as stat's %a prints it.
octal() { printf '%o' "$((8#$1))"; }

# install_file SRC DEST MODE OWNER:GROUP — copy only if content, mode or owner differ.
# Returns 0 when it changed something, 1 when DEST was already right (use: `if install_file ...`).
install_file() {
    local src="$1" dest="$2" mode="$3" owner="$4"
    [[ -f "$src" ]] || die "missing source file $src"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest" \
        && [[ "$(stat -c '%a %U:%G' "$dest")" == "$(octal "$mode") $owner" ]]; then
        return 1
    fi
    install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dest"
    say "wrote $dest"
    return 0
}

# replace_all TEXT PATTERN VALUE — TEXT with every PATTERN (literal) replaced by VALUE (literal),
# printed. Not ${text//pat/"$value"}: bash <= 4.2 (CentOS 6's 4.1) keeps those inner quotes in
# the result, and bash >= 5.2 expands & in an unquoted replacement (patsub_replacement). Cutting
# around the pattern means the same in every bash: quotes in a pattern have always meant literal.
replace_all() {
    local rest="$1" pat="$2" value="$3" out=""
    [[ -n "$pat" ]] || die "replace_all: empty pattern"
    while [[ "$rest" == *"$pat"* ]]; do
        out+="${rest%%"$pat"*}$value"
        rest="${rest#*"$pat"}"
    done
    printf '%s' "$out$rest"
}

# render_template SRC DEST MODE OWNER:GROUP KEY=VALUE... — replace @KEY@ in SRC, then install_file.
# Substitutes in bash, not sed: values (passwords in URLs) never appear on a command line.
render_template() {
    local src="$1" dest="$2" mode="$3" owner="$4"
    shift 4
    local text kv key value tmp
    text="$(cat "$src"; echo x)"   # the x keeps trailing newlines through $(...)
    text="${text%x}"
    for kv in "$@"; do
        key="${kv%%=*}"
        value="${kv#*=}"
        [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || die "render_template: bad key in '$key=...'"
        text="$(replace_all "$text" "@${key}@" "$value"; echo x)"
        text="${text%x}"
    done
    if [[ "$text" =~ @[A-Z_][A-Z0-9_]*@ ]]; then
        die "template $src has an unfilled placeholder: ${BASH_REMATCH[0]}"
    fi
    tmp="$(mktemp)"
    printf '%s' "$text" >"$tmp"
    local rc=1
    install_file "$tmp" "$dest" "$mode" "$owner" && rc=0
    rm -f "$tmp"
    return "$rc"
}

# ensure_dir DIR MODE OWNER:GROUP
ensure_dir() {
    local dir="$1" mode="$2" owner="$3"
    if [[ -d "$dir" && "$(stat -c '%a %U:%G' "$dir")" == "$(octal "$mode") $owner" ]]; then
        return 0
    fi
    install -d -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$dir"
}

# ensure_system_user NAME HOME — a locked system account with no login shell; its home is a
# bare 0750 directory (no /etc/skel dotfiles: homes here double as data directories).
ensure_system_user() {
    local name="$1" home="$2"
    if ! id -u "$name" >/dev/null 2>&1; then
        local nologin=/sbin/nologin
        [[ -x "$nologin" ]] || nologin=/usr/sbin/nologin
        useradd --system --user-group --home-dir "$home" --no-create-home --shell "$nologin" "$name"
        say "created system user $name"
    fi
    [[ -d "$home" ]] || install -d -m 0750 -o "$name" -g "$name" "$home"
}

# ensure_secret FILE OWNER:GROUP MODE — generate a random secret once; never print it.
ensure_secret() {
    local file="$1" owner="$2" mode="$3"
    if [[ ! -s "$file" ]]; then
        install -d -m 0750 "$(dirname "$file")"
        (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40 >"$file")
        say "generated secret $file"
    fi
    chown "$owner" "$file"
    chmod "$mode" "$file"
}

# service_enable NAME — start at boot through the init system's own tool.
service_enable() {
    detect_os
    local name="$1"
    if [[ "$OS_FAMILY" == debian ]]; then
        if ! compgen -G "/etc/rc2.d/S??$name" >/dev/null; then
            update-rc.d "$name" defaults >/dev/null
            # `defaults` keeps the K links of a service someone disabled; `enable` flips them.
            compgen -G "/etc/rc2.d/S??$name" >/dev/null || update-rc.d "$name" enable >/dev/null
        fi
    else
        chkconfig --list "$name" >/dev/null 2>&1 || chkconfig --add "$name"
        chkconfig "$name" on
    fi
}

# service_start NAME — start if its init script says it is not running.
service_start() {
    local name="$1"
    if ! service "$name" status >/dev/null 2>&1; then
        service "$name" start || die "service $name failed to start"
    fi
}
