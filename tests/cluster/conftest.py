"""testinfra and HTTP against the cluster lab (`LAB_TOPOLOGY=cluster make lab`): hosts from
`vagrant ssh-config` (make cluster-test writes it and passes --ssh-config), machines per role
from lab.yml (fablib/labfile.py), HTTP through the load balancer's forwarded port."""
from __future__ import annotations

import json
import shlex

import pytest
import testinfra

from fablib import labfile
from tests.infra.conftest import APP_USER, LAB, ROOT, fab, http_port, token  # noqa: F401 (token: a fixture)

if LAB["topology"] != "cluster":
    raise pytest.UsageError("tests/cluster needs the cluster lab running (LAB_TOPOLOGY=cluster make lab)")

APPS = labfile.with_role("app", LAB)
BROKERS = labfile.with_role("kafka", LAB)
DBS = labfile.with_role("db", LAB)
LBS = labfile.with_role("lb", LAB)
BASE = "http://127.0.0.1:%d" % http_port()


def ip(name: str) -> str:
    return labfile.machine_ip(name, LAB)


@pytest.fixture(scope="session")
def machine(request):
    """machine(name) -> its testinfra host (ssh, commands through sudo where they say so)."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = testinfra.get_host("ssh://" + name, ssh_config=request.config.option.ssh_config)
        return made[name]

    return get


def kafka_health(host) -> dict:
    """`flask kafka health` on an app node, parsed."""
    out = host.run("sudo -u %s /usr/local/bin/joblab-exec flask --app app kafka health" % shlex.quote(APP_USER))
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
