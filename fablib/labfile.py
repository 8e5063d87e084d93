"""lab.yml as the host-side tools read it (fabfile, testinfra, drills, and the shell scripts through
`python -m fablib.labfile get NAME`): the same rules as the Vagrantfile's: this checkout's
lab.local.yml (gitignored; `fab scale --workers` writes it) overrides lab.yml's settings, an
environment variable named after a setting beats both, an empty one counts as unset, and a
machine's address is its provider's subnet with the machine's `host` number."""
from __future__ import annotations

import glob
import ipaddress
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

import yaml

from . import REPO_ROOT

PROVIDERS = ("docker", "virtualbox", "libvirt")


LOCAL_FILE = os.path.join(REPO_ROOT, "lab.local.yml")


def load() -> Dict[str, Any]:
    """lab.yml, its settings overlaid with lab.local.yml's (settings lab.yml has, only)."""
    with open(os.path.join(REPO_ROOT, "lab.yml")) as fh:
        lab = yaml.safe_load(fh)
    for name, value in local_settings().items():
        if name not in lab["settings"]:
            raise SystemExit("lab.local.yml: %s is not a setting of lab.yml" % name)
        lab["settings"][name] = value
    return lab


def local_settings() -> Dict[str, Any]:
    try:
        with open(LOCAL_FILE) as fh:
            local = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        return {}
    settings = local.get("settings") if isinstance(local, dict) else None
    if not isinstance(settings, dict):
        raise SystemExit("lab.local.yml: expected a `settings:` mapping, like lab.yml's")
    return settings


def save_local_setting(name: str, value: Optional[str]) -> None:
    """Set one setting in lab.local.yml (made if missing; its other settings kept); None drops it."""
    if name not in load()["settings"]:
        raise SystemExit("lab.local.yml: %s is not a setting of lab.yml" % name)
    settings = dict(local_settings())
    settings.pop(name, None)
    if value is not None:
        settings[name] = str(value)
    tmp = LOCAL_FILE + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("# This checkout's overrides of lab.yml's settings (gitignored; a non-empty LAB_<NAME> in the\n"
                 "# environment still wins). `fab scale --workers` writes LAB_JOB_WORKERS here.\n")
        yaml.safe_dump({"settings": settings}, fh, default_flow_style=False, sort_keys=True)
    os.replace(tmp, LOCAL_FILE)


def setting(name: str, default: Any) -> Any:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def settings(lab: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """lab.yml's `settings`, each resolved (a non-empty environment variable of its name wins)."""
    lab = lab or load()
    return {name: str(setting(name, value)) for name, value in lab["settings"].items()}


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


def main(argv: List[str]) -> int:
    """`python -m fablib.labfile get NAME`: a setting's resolved value (for shell scripts and make)."""
    if len(argv) != 2 or argv[0] != "get":
        print("usage: python -m fablib.labfile get NAME", file=sys.stderr)
        return 2
    resolved = settings()
    if argv[1] not in resolved:
        print("labfile: %s is not a setting of lab.yml" % argv[1], file=sys.stderr)
        return 1
    print(resolved[argv[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
