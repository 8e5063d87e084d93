"""testinfra against the lab machines. Hosts come from `vagrant ssh-config` (make infra-test
writes it to .vagrant/ssh-config and passes --ssh-config); each module names its host."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fablib import labfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: lab.yml in the running lab's topology (the cluster's machines when it is the cluster).
LAB = labfile.load()


def machine_ip(name: str) -> str:
    return labfile.machine_ip(name, LAB)


def host_port(machine: str, guest: int) -> int:
    """The port on the host's 127.0.0.1 that lab.yml forwards to ``guest`` on ``machine``: the
    entry's `env` variable when set, else its `host` (the Vagrantfile's rule)."""
    fp = next(f for f in LAB["machines"][machine]["forwarded_ports"] if f["guest"] == guest)
    return int(labfile.setting(fp["env"], fp["host"]) if fp.get("env") else fp["host"])


def http_port() -> int:
    """The host port forwarded to port 80 of the lab's front (nginx on `app`, or on `lb`)."""
    front = next(name for name, m in LAB["machines"].items()
                 if any(f["guest"] == 80 for f in m.get("forwarded_ports") or []))
    return host_port(front, 80)


SETTINGS = labfile.settings(LAB)  # resolved: a non-empty LAB_<NAME> wins, as for the provisioning
APP_USER = SETTINGS["LAB_APP_USER"]
ENV_PREFIX = "/usr/local/envs/" + SETTINGS["LAB_ENV_NAME"]


@pytest.fixture(scope="module")
def root(host):
    """The same host, commands run through sudo (the vagrant user has passwordless sudo)."""
    with host.sudo():
        yield host


FAB = os.path.join(os.path.dirname(sys.executable), "fab")


def fab(*args, check=True):
    """`fab ARGS` from the repository (hosts from .vagrant/ssh-config, see fabric.yaml)."""
    run = subprocess.run([FAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


@pytest.fixture(scope="module")
def token():
    """A token of user `load` on the lab (lab-user.sh)."""
    out = subprocess.run([os.path.join(ROOT, "provision", "host", "lab-user.sh"), "load"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return out.strip().splitlines()[-1]
