#!/usr/bin/env bash
# Print the provider the lab will use: $LAB_PROVIDER when set (not "auto"), else virtualbox or
# libvirt when hardware virtualization is usable, else docker. The Vagrantfile applies the same
# rule; make passes the answer to it explicitly so the two never disagree.
set -euo pipefail

choice="${LAB_PROVIDER:-auto}"
if [[ "$choice" != auto ]]; then
    case "$choice" in
        docker | virtualbox | libvirt) echo "$choice"; exit 0 ;;
        *) echo "lab: LAB_PROVIDER=$choice is not one of: auto, docker, virtualbox, libvirt" >&2; exit 1 ;;
    esac
fi
if [[ -e /dev/vboxdrv ]] && command -v VBoxManage >/dev/null 2>&1; then
    echo virtualbox
elif [[ -w /dev/kvm ]] && command -v virsh >/dev/null 2>&1 \
    && command -v vagrant >/dev/null 2>&1 && vagrant plugin list 2>/dev/null | grep -q '^vagrant-libvirt'; then
    echo libvirt
else
    echo docker
fi
