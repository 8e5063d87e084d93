"""lab.yml as the host-side tools read it (fabfile, testinfra, drills, and the shell scripts through
`python -m fablib.labfile get NAME`): the same rules as the Vagrantfile's: this checkout's
lab.local.yml (gitignored; `fab scale --workers` writes it) overrides lab.yml's settings, an
environment variable named after a setting beats both, an empty one counts as unset, and a
machine's address is its provider's subnet with the machine's `host` number. The topology (`app` or
`cluster`) is LAB_TOPOLOGY, else the running lab's (.vagrant/lab-topology), else lab.yml's; for the
cluster, `machines` is the `cluster:` block's, expanded (kafka1..3, app1..N)."""
from __future__ import annotations

import base64
import glob
import hashlib
import ipaddress
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

import yaml

from . import REPO_ROOT

PROVIDERS = ("docker", "virtualbox", "libvirt")
TOPOLOGIES = ("app", "cluster")
#: The topology the running lab was booted with (provision/host/lab-up.sh writes it, `make
#: lab-destroy` removes it); the Vagrantfile reads it by the same rule.
TOPOLOGY_FILE = os.path.join(REPO_ROOT, ".vagrant", "lab-topology")


LOCAL_FILE = os.path.join(REPO_ROOT, "lab.local.yml")


def load() -> Dict[str, Any]:
    """lab.yml, its settings overlaid with lab.local.yml's (settings lab.yml has, only)."""
    lab = load_raw()
    for name, value in local_settings().items():
        if name not in lab["settings"]:
            raise SystemExit("lab.local.yml: %s is not a setting of lab.yml" % name)
        lab["settings"][name] = value
    lab["topology"] = topology(lab)
    if lab["topology"] == "cluster":
        lab["machines"] = cluster_machines(lab)
    return lab


def recorded_topology() -> Optional[str]:
    try:
        with open(TOPOLOGY_FILE) as fh:
            return fh.read().strip() or None
    except FileNotFoundError:
        return None


def topology(lab: Dict[str, Any]) -> str:
    running = recorded_topology()
    chosen = setting("LAB_TOPOLOGY", None) or running or lab["topology"]
    if chosen not in TOPOLOGIES:
        raise SystemExit("LAB_TOPOLOGY=%s is not one of: %s" % (chosen, ", ".join(TOPOLOGIES)))
    if running and running != chosen:
        raise SystemExit("the running lab is the %s topology, not %s: `make lab-destroy` first (or unset "
                         "LAB_TOPOLOGY)" % (running, chosen))
    return chosen


def cluster_machines(lab: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The cluster block's machines, in order, a `count` expanded: kafka -> kafka1..kafka3 at hosts
    host..host+count-1. A count may name a setting (LAB_APP_NODES), resolved like any other."""
    resolved = settings(lab)
    out: Dict[str, Dict[str, Any]] = {}
    for name, m in lab["cluster"]["machines"].items():
        count = m.get("count")
        if count is None:
            out[name] = dict(m)
            continue
        raw = resolved.get(count, count) if isinstance(count, str) else count
        if not str(raw).isdigit() or not 1 <= int(raw) <= 9:
            raise SystemExit("%s must be 1-9 machines (got %r)" % (count, raw))
        for i in range(int(raw)):
            one = {k: v for k, v in m.items() if k != "count"}
            one["host"] = int(m["host"]) + i
            out["%s%d" % (name, i + 1)] = one
    return out


def with_role(role: str, lab: Optional[Dict[str, Any]] = None) -> List[str]:
    """Names of the machines of ``role`` (app, sidecar, kafka, db, lb), in lab.yml's order."""
    lab = lab or load()
    return [name for name, m in lab["machines"].items() if m.get("role", name) == role]


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
    machines = lab["machines"]
    if name not in machines:
        # A machine of the other topology (names never repeat across them): its address all the
        # same, e.g. for a config rendered for the other shape than the one running.
        other = cluster_machines(lab) if lab.get("topology") != "cluster" else load_raw()["machines"]
        machines = other
    return str(net.network_address + int(machines[name]["host"]))


def load_raw() -> Dict[str, Any]:
    with open(os.path.join(REPO_ROOT, "lab.yml")) as fh:
        return yaml.safe_load(fh)


def checkout_id() -> str:
    """This checkout's id (the Vagrantfile's CHECKOUT_ID): the first characters of its path's SHA-1."""
    return hashlib.sha1(os.path.abspath(REPO_ROOT).encode()).hexdigest()[:8]


def kafka_cluster_id() -> str:
    """The cluster's Kafka id, the Vagrantfile's rule: 16 bytes of a digest of the checkout id, in
    Kafka's URL-safe base64 without padding (22 characters); the same on every broker."""
    digest = hashlib.sha256(("joblab-kafka-%s" % checkout_id()).encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def provision_env(lab: Optional[Dict[str, Any]] = None, given: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The machines' addresses and the Kafka layout every provision script gets: what the
    Vagrantfile computes for PROVISION_ENV (tests/infra/test_vagrantfile.py compares the two).
    ``given`` (the environment of `fab provision`) wins, name by name; a host outside the lab is
    described by LAB_SIDECAR_HOST and LAB_APP_HOST alone (docs/operations.md), which then also
    stand for the lists (LAB_KAFKA_HOSTS, LAB_DB_HOST, LAB_APP_HOSTS) unless those are given."""
    lab = lab or load()
    given = {k: v for k, v in (given or {}).items() if v}
    if "LAB_SIDECAR_HOST" in given:
        given.setdefault("LAB_KAFKA_HOSTS", given["LAB_SIDECAR_HOST"])
        given.setdefault("LAB_DB_HOST", given["LAB_SIDECAR_HOST"])
    if "LAB_APP_HOST" in given:
        given.setdefault("LAB_APP_HOSTS", given["LAB_APP_HOST"])
    ips = {name: machine_ip(name, lab) for name in lab["machines"]}
    cluster = lab["topology"] == "cluster"

    def of(role: str) -> List[str]:
        return [ips[name] for name in with_role(role, lab)]

    db = (of("db") if cluster else of("sidecar"))[0]
    env = {
        "LAB_TOPOLOGY": lab["topology"],
        "LAB_SIDECAR_HOST": db,
        "LAB_APP_HOST": of("app")[0],
        "LAB_APP_HOSTS": ",".join(of("app")),
        "LAB_KAFKA_HOSTS": ",".join(of("kafka") if cluster else of("sidecar")),
        "LAB_DB_HOST": db,
        "LAB_LB_HOST": (of("lb") or [""])[0],
        "LAB_KAFKA_REPLICATION": str(lab["cluster"]["kafka_replication"] if cluster else 1),
        "LAB_KAFKA_MIN_ISR": str(lab["cluster"]["kafka_min_isr"] if cluster else 1),
        "LAB_KAFKA_CLUSTER_ID": kafka_cluster_id(),
    }
    return {name: given.get(name, value) for name, value in env.items()}


def main(argv: List[str]) -> int:
    """`python -m fablib.labfile get NAME`: a setting's resolved value (for shell scripts and make);
    `... topology`: the lab's topology; `... role ROLE`: its machines of that role, one a line."""
    if argv == ["topology"]:
        print(load()["topology"])
        return 0
    if len(argv) == 2 and argv[0] == "role":
        names = with_role(argv[1])
        print("\n".join(names))
        return 0 if names else 1
    if len(argv) != 2 or argv[0] != "get":
        print("usage: python -m fablib.labfile get NAME | topology | role ROLE", file=sys.stderr)
        return 2
    resolved = settings()
    if argv[1] not in resolved:
        print("labfile: %s is not a setting of lab.yml" % argv[1], file=sys.stderr)
        return 1
    print(resolved[argv[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
