#!/usr/bin/env bash
# Make sure Vagrant is installed on this host. Debian 12's package (2.3.4) carries the built-in
# docker provider the lab machines use; no Vagrant Cloud access is needed. The vagrant-libvirt
# plugin (Debian package) comes too: it lets the Vagrantfile be validated for libvirt here and
# boots real VMs on hosts with working KVM.
# Idempotent: prints "vagrant: present (<version>)" and changes nothing when both are installed.
set -euo pipefail

# Pinned: the Debian 12 package (Vagrant 2.3.4).
VAGRANT_PACKAGES=(vagrant vagrant-libvirt)

as_root=()

die() {
    echo "vagrant: error: $*" >&2
    exit 1
}

use_sudo_unless_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo"
        as_root=(sudo)
    fi
}

vagrant_version() {
    vagrant --version 2>/dev/null | awk '{print $2}'
}

install_vagrant_package() {
    command -v apt-get >/dev/null 2>&1 || die "vagrant missing and no apt-get here; install it by hand"
    echo "vagrant: installing ${VAGRANT_PACKAGES[*]}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${VAGRANT_PACKAGES[@]}" >/dev/null || die "apt-get install ${VAGRANT_PACKAGES[*]} failed"
}

main() {
    if command -v vagrant >/dev/null 2>&1 && dpkg-query -W -f='${Status}' vagrant-libvirt 2>/dev/null | grep -q "ok installed"; then
        echo "vagrant: present ($(vagrant_version))"
        return 0
    fi
    use_sudo_unless_root
    install_vagrant_package
    command -v vagrant >/dev/null 2>&1 || die "vagrant installed but not on PATH"
    echo "vagrant: installed ($(vagrant_version))"
}

main "$@"
