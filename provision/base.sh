#!/usr/bin/env bash
# Base packages and settings of the app machine: TLS roots, curl, ps/ss, Python 3 with venv support
# where the OS has a new enough one, UTC time zone. On CentOS 6 it first points yum at the CentOS
# vault (the mirrors dropped EL6 at its end of life, so stock yum fails). Prints nothing when all is
# in place. Run as root; part of the app machine's provisioning (base, python-env, app, supervisor, nginx).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# The last CentOS 6 tree on the vault (a frozen 6.8 tree is unconfirmed: RHEL-FACTS §1).
CENTOS6_VAULT_RELEASE="${LAB_CENTOS6_VAULT_RELEASE:-6.10}"

# psmisc: killall, fuser, pstree - part of a RHEL base system, and the seed's admin commands use killall.
debian_packages=(ca-certificates curl procps psmisc iproute2 less tzdata python3 python3-venv)

rhel_packages() {
    local pkgs=(ca-certificates curl tar bzip2 less which psmisc)
    case "$OS_MAJOR" in
        6) pkgs+=(procps iproute) ;;              # Python comes from conda (python-env.sh)
        7) pkgs+=(procps-ng iproute) ;;           # python3 is 3.6: conda only
        8) pkgs+=(procps-ng iproute python39) ;;  # AppStream's 3.9 for the venv
        *) pkgs+=(procps-ng iproute python3) ;;   # 9+: python3 is 3.9 or newer
    esac
    echo "${pkgs[@]}"
}

# CentOS 6 only: base/updates/extras from the vault, mirrorlists gone.
point_yum_at_vault() {
    [[ "$OS_MAJOR" == 6 ]] || return 0
    grep -qi '^centos' /etc/redhat-release || return 0
    local tmp repo
    tmp="$(mktemp)"
    {
        echo "# CentOS $CENTOS6_VAULT_RELEASE from the vault (written by provision/base.sh): EL6 left the mirrors at EOL."
        for repo in os updates extras; do
            echo "[${repo/os/base}]"
            echo "name=CentOS-$CENTOS6_VAULT_RELEASE - $repo (vault)"
            echo "baseurl=http://vault.centos.org/$CENTOS6_VAULT_RELEASE/$repo/\$basearch/"
            echo "gpgcheck=1"
            echo "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6"
            echo
        done
    } >"$tmp"
    if install_file "$tmp" /etc/yum.repos.d/CentOS-Base.repo 644 root:root; then
        yum clean all -q >/dev/null 2>&1 || true
    fi
    rm -f "$tmp"
}

set_timezone_utc() {
    if [[ "$(readlink -f /etc/localtime)" != "$(readlink -f /usr/share/zoneinfo/UTC)" ]]; then
        ln -sfn /usr/share/zoneinfo/UTC /etc/localtime
        say "time zone: UTC"
    fi
    if [[ "$OS_FAMILY" == debian && "$(cat /etc/timezone 2>/dev/null)" != Etc/UTC ]]; then
        echo Etc/UTC >/etc/timezone
    fi
}

require_root
detect_os
if [[ "$OS_FAMILY" == debian ]]; then
    pkg_install "${debian_packages[@]}"
else
    point_yum_at_vault
    # EPEL is not needed: nginx comes from nginx.org, Python from conda or the OS, supervisor from pip.
    read -r -a pkgs <<<"$(rhel_packages)"
    pkg_install "${pkgs[@]}"
fi
set_timezone_utc
