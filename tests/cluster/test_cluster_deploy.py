"""The rolling deploy: `fab deploy` takes one app node at a time out of the load balancer, deploys
it, puts it back once /readyz answers - under steady HTTP load through the load balancer, not one
request fails; `fab rollback` the same way."""
from __future__ import annotations

import json

from tests.cluster.conftest import APPS, LBS, fab, ip
from tests.infra.load import Load
from tests.infra.test_deploy import source_tree


def versions(machine):
    return {n: json.loads(machine(n).run("curl -s -m 5 http://127.0.0.1/v1/info").stdout)["version"] for n in APPS}


def all_serving(machine):
    out = machine(LBS[0]).run("sudo /usr/local/sbin/joblab-lb status").stdout
    return all("%s:80 serving" % ip(n) in out for n in APPS)


def test_rolling_deploy_and_rollback_under_load(machine, token, tmp_path):
    before = versions(machine)
    version = "0.1.0+rolling1"
    tree = source_tree(tmp_path, version)
    with Load(token) as load:
        run = fab("deploy", "--source=%s" % tree)
    assert run.returncode == 0, run.stdout + run.stderr
    # One node after the other: each drained, deployed, back.
    order = [line.split(":")[0] for line in run.stdout.splitlines() if line.endswith("drained on %s" % LBS[0])]
    assert order == APPS, run.stdout
    assert load.failures == [], load.failures[:10]
    assert load.ok > 50
    assert set(versions(machine).values()) == {version}
    assert all_serving(machine)

    with Load(token) as load:
        run = fab("rollback")
    assert run.returncode == 0, run.stdout + run.stderr
    assert load.failures == [], load.failures[:10]
    assert versions(machine) == before
    assert all_serving(machine)
