#!/usr/bin/env bash
# Build the local Docker image the lab's Vagrant machines boot from: Debian 12 with SysV init as
# PID 1 (CMD /sbin/init), sshd, sudo and a `vagrant` user holding Vagrant's insecure public key.
# Nothing is pulled from a registry: the rootfs comes from debootstrap (Debian's default mirror).
#
#   image present          -> prints "base image: present" and changes nothing
#   rootfs tarball cached  -> imports it (offline, a few seconds), e.g. after `docker rmi`
#   neither                -> debootstrap + configure in a temp dir, save the tarball, import
#
# The tarball only ever appears complete (written to a temp name, then renamed), and the image
# name is only tagged once the import has succeeded, so an interrupted run leaves nothing
# half-built behind and is simply redone.
#
# Needs: a running Docker engine (provision/host/docker-engine.sh) and, for a fresh build,
# Vagrant installed (provision/host/vagrant.sh) for its insecure public key. Root or sudo.
# Env: LAB_IMAGE, ARTIFACT_CACHE, VAGRANT_INSECURE_PUBKEY (path), TMPDIR.
set -euo pipefail

# Pinned. Bump ROOTFS_RECIPE whenever the rootfs changes, so a stale cached tarball is not reused.
DEBIAN_SUITE="bookworm"
ROOTFS_RECIPE="debian12-sysv-1"
ROOTFS_PACKAGES="sysvinit-core,openssh-server,sudo,procps,iproute2,curl,ca-certificates,python3,less,netbase"
# `docker stop` sends this; the inittab turns it into `init 0` (see rootfs_setup_script). The
# container then ends when halt calls reboot(2), which needs `--cap-add SYS_BOOT` (in a container
# that only ends the container's own PID namespace); without it services still stop cleanly
# but docker waits out its stop timeout and kills init.
STOP_SIGNAL="SIGPWR"

LAB_IMAGE="${LAB_IMAGE:-joblab/debian12-sysv:1}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
ARTIFACT_CACHE="${ARTIFACT_CACHE:-$REPO_ROOT/.cache/artifacts}"
ROOTFS_TARBALL="$ARTIFACT_CACHE/images/$ROOTFS_RECIPE.tar"

export HOST_TOOL=base-image
# shellcheck source=provision/host/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK_DIR=""
DEBOOTSTRAP_PID=""
PARTIAL_TARBALL=""
UNTAGGED_IMAGE_IDS=()


# Runs on every exit: drops the temp rootfs, a partly written tarball and an imported image that
# never got its name.
remove_leftovers() {
    local image_id
    if [[ -n "$DEBOOTSTRAP_PID" ]]; then
        stop_debootstrap
    fi
    for image_id in "${UNTAGGED_IMAGE_IDS[@]}"; do
        "${as_root[@]}" docker rmi "$image_id" >/dev/null 2>&1 || true
    done
    if [[ -n "$PARTIAL_TARBALL" ]]; then
        rm -f -- "$PARTIAL_TARBALL"
    fi
    if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
        # debootstrap mounts /proc and /sys inside the target; never rm -rf through a mount.
        if findmnt -rn -o TARGET | grep -q "^$WORK_DIR/"; then
            findmnt -rn -o TARGET | grep "^$WORK_DIR/" | sort -r \
                | while read -r mnt; do "${as_root[@]}" umount -l "$mnt" || true; done
        fi
        if findmnt -rn -o TARGET | grep -q "^$WORK_DIR/"; then
            echo "base-image: left $WORK_DIR in place: something is still mounted in it" >&2
        else
            "${as_root[@]}" rm -rf -- "$WORK_DIR"
        fi
    fi
}

engine_answers() {
    "${as_root[@]}" docker info >/dev/null 2>&1
}

image_present() {
    "${as_root[@]}" docker image inspect "$LAB_IMAGE" >/dev/null 2>&1
}

install_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    echo "base image: installing debootstrap"
    apt_install_host debootstrap
}

# The public half of Vagrant's well-known insecure key pair, shipped inside the vagrant gem.
# Vagrant logs in with it once, then replaces it with a key of the machine's own.
find_vagrant_insecure_pubkey() {
    local candidate
    if [[ -n "${VAGRANT_INSECURE_PUBKEY:-}" ]]; then
        [[ -f "$VAGRANT_INSECURE_PUBKEY" ]] || die "VAGRANT_INSECURE_PUBKEY=$VAGRANT_INSECURE_PUBKEY: no such file"
        echo "$VAGRANT_INSECURE_PUBKEY"
        return 0
    fi
    for candidate in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
                     /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
        if [[ -f "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    candidate="$(find /usr /opt -xdev -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -n 1)"
    [[ -n "$candidate" ]] || die "Vagrant's insecure public key (keys/vagrant.pub) not found; run provision/host/vagrant.sh first"
    echo "$candidate"
}

debootstrap_rootfs() {
    local rootfs="$1" status=0
    echo "base image: debootstrap $DEBIAN_SUITE into $rootfs (about 30-60 s)"
    # No mirror argument: debootstrap's default Debian mirror.
    # Not ifupdown/isc-dhcp-client: their `networking` service blocks boot waiting for DHCP.
    # In the background, in a session of its own, so an interrupt reaches remove_leftovers at
    # once and it can stop debootstrap with all its children (stop_debootstrap).
    "${as_root[@]}" setsid debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
        "$DEBIAN_SUITE" "$rootfs" >"$WORK_DIR/debootstrap.log" 2>&1 &
    DEBOOTSTRAP_PID=$!
    wait "$DEBOOTSTRAP_PID" || status=$?
    DEBOOTSTRAP_PID=""
    if [[ "$status" -ne 0 ]]; then
        tail -n 5 "$WORK_DIR/debootstrap.log" >&2
        die "debootstrap failed (last lines above)"
    fi
}

# debootstrap has no cleanup of its own: stop its whole process group (dpkg, chroot, wget) before
# its target dir is removed. Its group is its own pid when run directly, the pid of sudo's child
# when run through sudo.
stop_debootstrap() {
    local group waited=0
    if [[ ${#as_root[@]} -eq 0 ]]; then
        group="$DEBOOTSTRAP_PID"
    else
        group="$(pgrep -P "$DEBOOTSTRAP_PID" | head -n 1)" || true
    fi
    if [[ -n "$group" ]]; then
        "${as_root[@]}" kill -TERM -- "-$group" 2>/dev/null || true
        while "${as_root[@]}" kill -0 -- "-$group" 2>/dev/null && (( waited < 50 )); do
            sleep 0.2
            waited=$((waited + 1))
        done
        "${as_root[@]}" kill -KILL -- "-$group" 2>/dev/null || true
    fi
    wait "$DEBOOTSTRAP_PID" 2>/dev/null || true
    DEBOOTSTRAP_PID=""
}

# Runs inside the rootfs (bash -s in chroot); $1 is the vagrant public key line.
rootfs_setup_script() {
    cat <<'SETUP'
set -euo pipefail
pubkey="$1"

# vagrant: bash, passwordless sudo without a tty, the insecure key for Vagrant's first login.
id vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group vagrant
printf '%s\n' 'Defaults:vagrant !requiretty' 'vagrant ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
visudo -cqf /etc/sudoers.d/vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
printf '%s\n' "$pubkey" >/home/vagrant/.ssh/authorized_keys
chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
chmod 0600 /home/vagrant/.ssh/authorized_keys

# inittab: a container has no ttys, so getty lines would only respawn-fail. `docker stop`
# sends SIGPWR; with no /etc/powerstatus, init runs the powerwait entry: a clean `init 0`.
sed -i -E '/^[^#][^:]*:[^:]*:respawn:\/sbin\/getty/d' /etc/inittab
sed -i -E '/^[^#][^:]*:[^:]*:power(wait|failnow|okwait):/d' /etc/inittab
grep -q '^pf::powerwait:/sbin/init 0$' /etc/inittab \
    || printf '%s\n' '# docker stop (SIGPWR): shut down cleanly' 'pf::powerwait:/sbin/init 0' >>/etc/inittab

# Every container generates its own SSH host keys on first boot, before sshd starts.
rm -f /etc/ssh/ssh_host_*
cat >/etc/init.d/ssh-hostkeys <<'INITD'
#!/bin/sh
### BEGIN INIT INFO
# Provides:          ssh-hostkeys
# Required-Start:    $local_fs
# Required-Stop:
# X-Start-Before:    ssh
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: Generate this machine's own SSH host keys when it has none
### END INIT INFO
case "$1" in
    start)
        if ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
            echo "ssh-hostkeys: generating SSH host keys"
            ssh-keygen -A
        fi
        ;;
    stop|restart|force-reload|status) ;;
    *) echo "Usage: /etc/init.d/ssh-hostkeys start" >&2; exit 3 ;;
esac
exit 0
INITD
chmod 0755 /etc/init.d/ssh-hostkeys
update-rc.d ssh-hostkeys defaults >/dev/null

# sshd: no reverse DNS lookup of the client (slow logins when there is no DNS for it).
printf '%s\n' '# joblab: no reverse DNS lookups of clients (fast logins)' 'UseDNS no' \
    >/etc/ssh/sshd_config.d/joblab.conf

# Docker sets the real hostname, /etc/hosts and /etc/resolv.conf at run time.
echo localhost >/etc/hostname

# apt sources stay as debootstrap wrote them (Debian's default mirror); caches and lists go
# (provisioners run `apt-get update` before installing).
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log /var/log/apt/* /root/.bash_history
SETUP
}

configure_rootfs() {
    local rootfs="$1" pubkey_file="$2" pubkey
    pubkey="$(head -n 1 "$pubkey_file")"
    [[ "$pubkey" == ssh-* ]] || die "$pubkey_file does not look like an SSH public key"
    echo "base image: configuring the rootfs (vagrant user, sudo, inittab, sshd)"
    rootfs_setup_script | "${as_root[@]}" chroot "$rootfs" /bin/bash -s -- "$pubkey" \
        || die "configuring the rootfs in chroot failed"
}

check_rootfs() {
    local rootfs="$1" path
    for path in sbin/init usr/sbin/sshd usr/bin/sudo etc/init.d/ssh-hostkeys \
                etc/sudoers.d/vagrant home/vagrant/.ssh/authorized_keys; do
        "${as_root[@]}" test -e "$rootfs/$path" || die "rootfs check: /$path missing"
    done
    if "${as_root[@]}" grep -Eq '^[^#].*:respawn:/sbin/getty' "$rootfs/etc/inittab"; then
        die "rootfs check: getty lines still in /etc/inittab"
    fi
}

save_rootfs_tarball() {
    local rootfs="$1"
    echo "base image: saving the rootfs to $ROOTFS_TARBALL"
    mkdir -p "$(dirname "$ROOTFS_TARBALL")"
    PARTIAL_TARBALL="$ROOTFS_TARBALL.partial.$$"
    "${as_root[@]}" tar -C "$rootfs" --numeric-owner --one-file-system -cf - . >"$PARTIAL_TARBALL" \
        || die "tar of the rootfs failed"
    mv -f -- "$PARTIAL_TARBALL" "$ROOTFS_TARBALL"
    PARTIAL_TARBALL=""
}

build_rootfs_tarball() {
    local pubkey_file rootfs
    pubkey_file="$(find_vagrant_insecure_pubkey)"
    install_debootstrap
    WORK_DIR="$(mktemp -d "${TMPDIR:-/var/tmp}/joblab-base-image.XXXXXX")"
    rootfs="$WORK_DIR/rootfs"
    debootstrap_rootfs "$rootfs"
    configure_rootfs "$rootfs" "$pubkey_file"
    check_rootfs "$rootfs"
    save_rootfs_tarball "$rootfs"
}

# A stop-signal Dockerfile for the imported rootfs: the 20.10 engine refuses STOPSIGNAL as an
# import --change, so it is added by a one-line build on top (no context, nothing pulled).
stop_signal_dockerfile() {
    printf 'FROM %s\nSTOPSIGNAL %s\n' "$1" "$STOP_SIGNAL"
}

# Imported and built without a name; the name is only given once both have succeeded.
import_image() {
    local rootfs_image build_output final_image
    echo "base image: importing $ROOTFS_TARBALL as $LAB_IMAGE"
    rootfs_image="$("${as_root[@]}" docker import \
        --change 'CMD ["/sbin/init"]' \
        --message "joblab $ROOTFS_RECIPE: debootstrap $DEBIAN_SUITE minbase + sysvinit + sshd" \
        - <"$ROOTFS_TARBALL")" || die "docker import failed"
    UNTAGGED_IMAGE_IDS=("$rootfs_image")
    # The classic builder (DOCKER_BUILDKIT=0) resolves FROM <image id> locally, never from a registry.
    if ! build_output="$(stop_signal_dockerfile "$rootfs_image" \
            | "${as_root[@]}" env DOCKER_BUILDKIT=0 docker build -q - 2>&1)"; then
        echo "$build_output" >&2
        die "docker build (STOPSIGNAL $STOP_SIGNAL) failed"
    fi
    final_image="$(grep -o 'sha256:[0-9a-f]*' <<<"$build_output" | tail -n 1)"
    [[ -n "$final_image" ]] || die "docker build printed no image id: $build_output"
    UNTAGGED_IMAGE_IDS=("$final_image" "$rootfs_image")
    "${as_root[@]}" docker tag "$final_image" "$LAB_IMAGE" || die "docker tag $LAB_IMAGE failed"
    UNTAGGED_IMAGE_IDS=()
}

main() {
    use_sudo_unless_root "debootstrap, chroot, docker"
    engine_answers || die "no Docker engine answers; run provision/host/docker-engine.sh first"
    if image_present; then
        echo "base image: present ($LAB_IMAGE)"
        return 0
    fi
    trap remove_leftovers EXIT
    if [[ -f "$ROOTFS_TARBALL" ]]; then
        echo "base image: reusing cached rootfs $ROOTFS_TARBALL"
    else
        build_rootfs_tarball
    fi
    import_image
    echo "base image: built $LAB_IMAGE"
}

main "$@"
