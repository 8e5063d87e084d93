#!/usr/bin/env python3
"""`make lab` on the VM providers (virtualbox, libvirt): check this host before `vagrant up`, so a
lab that cannot boot says why in one line, up front, instead of failing half-way through.

    provision/host/vm-preflight.py PROVIDER

Checks (each failure is one line saying what to do; exit 1 at the first):
- VirtualBox's version is one this Vagrant drives (Vagrant 2.3.4, Debian's, drives up to 7.0;
  7.1 support arrived in Vagrant 2.4.2);
- the lab's subnet is inside a host-only range VirtualBox allows (/etc/vbox/networks.conf, else
  its default 192.168.56.0/21);
- the machines' memory fits in what this host has available;
- the CentOS 6 app box (profile centos6) has what it cannot get by itself: the pinned Miniconda
  installer (CentOS 6 has no Python 3.9, and current installers need a newer glibc) and nginx's
  el6 RPM and signing key (nginx.org's el6 repo may be gone), in the artifact cache, with the
  pinned checksums;
- the box has a build for the provider (bento publishes no libvirt box for CentOS 6).
The machines' computed settings come from Vagrant itself (LAB_DUMP_CONFIG, see the Vagrantfile).
Stdlib only: it runs before anything is installed.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("ARTIFACT_CACHE") or os.path.join(ROOT, ".cache", "artifacts")
#: VirtualBox's host-only ranges when /etc/vbox/networks.conf does not exist (6.1.28+ on Linux).
VBOX_DEFAULT_RANGES = ["192.168.56.0/21"]
#: The newest VirtualBox each Vagrant release drives (its providers/virtualbox/driver/meta.rb).
#: Vagrant 2.3.4 lists 4.0 ... 7.0 (read from the installed gem); 7.1: Vagrant 2.4.2's changelog.
VAGRANT_DRIVES = [((2, 4, 2), (7, 1)), ((0, 0, 0), (7, 0))]
#: Memory the host keeps for itself beside the machines (MB).
HOST_RESERVE_MB = 1024
#: Boxes that have no build for a provider (bento's published providers; see docs/lab.md).
NO_BUILD = {("bento/centos-6.10", "libvirt")}


class Refused(Exception):
    """One line: what is wrong and what to do."""


def version(text: str, parts: int) -> Tuple[int, ...]:
    m = re.search(r"(\d+(?:\.\d+){%d})" % (parts - 1), text)
    if not m:
        raise Refused("cannot read a version from %r" % text.strip()[:80])
    return tuple(int(x) for x in m.group(1).split("."))


def run(cmd: List[str], env: Optional[Dict[str, str]] = None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=True).stdout
    except FileNotFoundError:
        raise Refused("%s is not installed" % cmd[0]) from None
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise Refused("`%s` failed: %s" % (" ".join(cmd), last[0])) from None


def vagrant_config(provider: str) -> Dict[str, Any]:
    """What the Vagrantfile computes for ``provider``, as Vagrant itself loads it."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "config.json")
        run(["vagrant", "validate", "--ignore-provider"],
            env=dict(os.environ, LAB_PROVIDER=provider, LAB_DUMP_CONFIG=dump))
        with open(dump) as fh:
            return json.load(fh)


def check_virtualbox_version() -> str:
    vbox = version(run(["VBoxManage", "--version"]), 2)
    vagrant = version(run(["vagrant", "--version"]), 3)
    newest = next(v for floor, v in VAGRANT_DRIVES if vagrant >= floor)
    if vbox > newest:
        raise Refused("VirtualBox %s is newer than Vagrant %s drives (up to %s): install Vagrant >= 2.4.2, "
                      "or VirtualBox %s" % (".".join(map(str, vbox)), ".".join(map(str, vagrant)),
                                            ".".join(map(str, newest)), ".".join(map(str, newest))))
    return "VirtualBox %s, Vagrant %s" % (".".join(map(str, vbox)), ".".join(map(str, vagrant)))


def allowed_ranges(path: str) -> List[str]:
    """VirtualBox's host-only ranges: the `* <cidr> ...` lines of networks.conf, else the default."""
    if not os.path.exists(path):
        return VBOX_DEFAULT_RANGES
    ranges: List[str] = []
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == "*":
                ranges.extend(fields[1:])
    return ranges


def check_host_only_range(config: Dict[str, Any], path: str) -> str:
    subnet = ipaddress.ip_network(config["subnet"], strict=False)
    ranges = allowed_ranges(path)
    if not any(subnet.subnet_of(ipaddress.ip_network(r, strict=False)) for r in ranges if ":" not in r):
        raise Refused("the lab's subnet %s is outside VirtualBox's host-only ranges (%s, from %s): set "
                      "LAB_SUBNET inside them, or add it to %s" % (
                          subnet, " ".join(ranges), path if os.path.exists(path) else "its default", path))
    return "subnet %s inside %s" % (subnet, " ".join(ranges))


def available_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    raise Refused("cannot read MemAvailable from /proc/meminfo")


def running_machines(provider: str) -> List[str]:
    """The machines of this checkout that run already (a re-run of `make lab`): their memory is
    taken from what is available, not wanted on top of it."""
    try:
        out = run(["vagrant", "status", "--machine-readable"], env=dict(os.environ, LAB_PROVIDER=provider))
    except Refused:  # the provider cannot even be asked yet: nothing of ours runs on it
        return []
    return running_in(out, provider)


def running_in(status: str, provider: str) -> List[str]:
    """From `vagrant status --machine-readable`: the machines running under ``provider``. A machine
    created with another provider (this checkout's docker lab, up while the VM path is checked)
    is reported with that provider, and takes nothing from what the VMs would need."""
    fields = [line.split(",") for line in status.splitlines()]
    providers = {f[1]: f[3] for f in fields if len(f) >= 4 and f[2] == "provider-name"}
    return [f[1] for f in fields if len(f) >= 4 and f[2] == "state" and f[3] == "running"
            and providers.get(f[1]) == provider]


def check_memory(config: Dict[str, Any], running: List[str]) -> str:
    wanted = sum(int(m["memory"]) for name, m in config["machines"].items() if name not in running)
    have = available_mb()
    if wanted + HOST_RESERVE_MB > have:
        sizes = ", ".join("%s %d MB" % (n, int(m["memory"])) for n, m in sorted(config["machines"].items()))
        raise Refused("the machines need %d MB (%s) and this host keeps %d MB, but only %d MB are available: "
                      "free memory, or lower LAB_<MACHINE>_MEMORY" % (wanted, sizes, HOST_RESERVE_MB, have))
    return "memory: %d MB of %d MB available" % (wanted, have)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_fingerprints(path: str) -> List[str]:
    """Fingerprints of the OpenPGP keys in ``path`` (gpg >= 2.2.8), upper case."""
    out = run(["gpg", "--show-keys", "--with-colons", path])
    return [line.split(":")[9].upper() for line in out.splitlines() if line.startswith("fpr:")]


def check_nginx_el6(rpm: str, fingerprint: str) -> str:
    """nginx.org's el6 RPM and the key it is signed with (the app checks the signature with rpm -K
    before installing). The RPM's own checksum is not pinned: its signature is the check."""
    folder = os.path.join(CACHE, "nginx")
    for name, what in ((rpm, "nginx.org's el6 package of nginx"), ("nginx_signing.key", "nginx.org's signing key")):
        if not os.path.exists(os.path.join(folder, name)):
            raise Refused("%s/%s is missing: put %s (%s) there; CentOS 6 cannot be sure to reach nginx.org's "
                          "el6 repository any more" % (folder, name, name, what))
    fprs = key_fingerprints(os.path.join(folder, "nginx_signing.key"))
    if fingerprint.upper() not in fprs:
        raise Refused("%s/nginx_signing.key is not nginx's key %s (it holds %s): replace it" % (
            folder, fingerprint, ", ".join(fprs) or "no key"))
    return "%s and nginx's key %s..." % (rpm, fingerprint[:16])


def check_cached(kind: str, name: str, expected: str, where: str) -> str:
    path = os.path.join(CACHE, kind, name)
    if not os.path.exists(path):
        raise Refused("%s is missing: put %s (sha256 %s, %s) into %s/" % (
            path, name, expected, where, os.path.dirname(path)))
    got = sha256(path)
    if got != expected:
        raise Refused("%s has sha256 %s, not the pinned %s: replace it with the real %s" % (path, got, expected, name))
    return "%s ok" % name


def lab_settings() -> Dict[str, str]:
    """lab.yml's settings with the environment's overrides, read without PyYAML (stdlib only):
    the `settings:` block is `KEY: value  # comment` lines."""
    settings: Dict[str, str] = {}
    inside = False
    with open(os.path.join(ROOT, "lab.yml")) as fh:
        for line in fh:
            if re.match(r"^\S", line):
                inside = line.startswith("settings:")
                continue
            m = re.match(r"^\s+(LAB_[A-Z0-9_]+):\s*(\"[^\"]*\"|[^#\s]+)", line) if inside else None
            if m:
                settings[m.group(1)] = m.group(2).strip('"')
    return {k: os.environ.get(k) or v for k, v in settings.items()}


def preflight(provider: str) -> List[str]:
    config = vagrant_config(provider)
    done = []
    if provider == "virtualbox":
        done.append(check_virtualbox_version())
        done.append(check_host_only_range(config, os.environ.get("VBOX_NETWORKS_CONF", "/etc/vbox/networks.conf")))
    done.append(check_memory(config, running_machines(provider)))
    settings = lab_settings()
    for name, m in sorted(config["machines"].items()):
        if (m["box"], provider) in NO_BUILD:
            raise Refused("box %s has no %s build: use VirtualBox (LAB_PROVIDER=virtualbox), or set LAB_%s_BOX "
                          "to a %s box of the same OS" % (m["box"], provider, name.upper(), provider))
        if m.get("profile") == "centos6":
            if settings.get("LAB_PYTHON_ENV", "auto") != "venv":
                done.append(check_cached("miniconda", settings["LAB_MINICONDA_INSTALLER"],
                                         settings["LAB_MINICONDA_SHA256"], "from Anaconda's installer archive"))
            done.append(check_nginx_el6(settings["LAB_NGINX_EL6_RPM"], settings["LAB_NGINX_KEY_FINGERPRINT"]))
    return done


def main(argv: List[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("virtualbox", "libvirt"):
        print("usage: vm-preflight.py virtualbox|libvirt", file=sys.stderr)
        return 2
    try:
        for line in preflight(argv[1]):
            print("lab preflight: %s" % line)
    except Refused as exc:
        print("lab preflight: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
