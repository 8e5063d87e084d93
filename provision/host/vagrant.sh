#!/usr/bin/env bash
# Make sure Vagrant is installed on this host. Debian 12's package (2.3.4) carries the built-in
# docker provider the lab machines use; no Vagrant Cloud access is needed. The vagrant-libvirt
# plugin (Debian package) comes too: it lets the Vagrantfile be validated for libvirt here and
# boots real VMs on hosts with working KVM.
# Idempotent: prints "vagrant: present (<version>)" and changes nothing when both are installed.
set -euo pipefail

# Pinned: the Debian 12 package (Vagrant 2.3.4).
VAGRANT_PACKAGES=(vagrant vagrant-libvirt)

export HOST_TOOL=vagrant
# shellcheck source=provision/host/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vagrant_version() {
    vagrant --version 2>/dev/null | awk '{print $2}'
}

install_vagrant_package() {
    echo "vagrant: installing ${VAGRANT_PACKAGES[*]}"
    apt_install_host "${VAGRANT_PACKAGES[@]}"
}

main() {
    if command -v vagrant >/dev/null 2>&1 && dpkg-query -W -f='${Status}' vagrant-libvirt 2>/dev/null | grep -q "ok installed"; then
        echo "vagrant: present ($(vagrant_version))"
        return 0
    fi
    use_sudo_unless_root "apt-get"
    install_vagrant_package
    command -v vagrant >/dev/null 2>&1 || die "vagrant installed but not on PATH"
    echo "vagrant: installed ($(vagrant_version))"
}

main "$@"
