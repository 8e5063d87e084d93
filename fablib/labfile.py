"""lab.yml as the host-side Python tools read it (fabfile, testinfra, drills): the same rules as the
Vagrantfile's: an environment variable named after a setting beats the file, an empty one counts
as unset, and a machine's address is its provider's subnet with the machine's `host` number."""
from __future__ import annotations

import glob
import ipaddress
import os
import subprocess
from typing import Any, Dict, Optional

import yaml

from . import REPO_ROOT

PROVIDERS = ("docker", "virtualbox", "libvirt")


def load() -> Dict[str, Any]:
    with open(os.path.join(REPO_ROOT, "lab.yml")) as fh:
        return yaml.safe_load(fh)


def setting(name: str, default: Any) -> Any:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def provider(lab: Optional[Dict[str, Any]] = None) -> str:
    """LAB_PROVIDER (or lab.yml's) when it names one; else the provider of the machines Vagrant
    has made in this checkout; else what `make lab` would pick (provision/host/lab-provider.sh)."""
    lab = lab or load()
    chosen = setting("LAB_PROVIDER", lab["provider"])
    if chosen in PROVIDERS:
        return chosen
    made = {os.path.basename(os.path.dirname(p))
            for p in glob.glob(os.path.join(REPO_ROOT, ".vagrant", "machines", "*", "*", "id"))}
    if len(made) == 1:
        return made.pop()
    script = os.path.join(REPO_ROOT, "provision", "host", "lab-provider.sh")
    return subprocess.run([script], capture_output=True, text=True, check=True).stdout.strip()


def machine_ip(name: str, lab: Optional[Dict[str, Any]] = None, on: Optional[str] = None) -> str:
    """The address of machine ``name``: LAB_<NAME>_IP, else its `host` number in the subnet of the
    provider (LAB_SUBNET overrides that subnet)."""
    lab = lab or load()
    override = setting("LAB_%s_IP" % name.upper(), None)
    if override:
        return override
    net = ipaddress.ip_network(setting("LAB_SUBNET", lab["subnet"][on or provider(lab)]))
    return str(net.network_address + int(lab["machines"][name]["host"]))
