"""Each role of the cluster lab as provisioned: the KRaft quorum of three with replication 3 and
min ISR 2, the app nodes sharing one consumer group and bootstrapping from every broker, the
database admitting each app node, the load balancer spreading requests over the nodes."""
from __future__ import annotations

import re
import time

import pytest

from tests.cluster.conftest import APPS, BASE, BROKERS, DBS, LBS, fab, ip, kafka_health
from tests.infra.conftest import SETTINGS
from tests.support import httpclient as http


@pytest.mark.parametrize("name", BROKERS)
def test_broker_is_a_voter_of_the_quorum(machine, name):
    host = machine(name)
    assert host.run("sudo service kafka status").rc == 0
    conf = host.run("sudo cat /etc/kafka/server.properties").stdout
    settings = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["node.id"] == str(BROKERS.index(name) + 1)
    assert settings["controller.quorum.voters"] == ",".join(
        "%d@%s:9093" % (i + 1, ip(b)) for i, b in enumerate(BROKERS))
    assert settings["advertised.listeners"] == "PLAINTEXT://%s:9092" % ip(name)
    assert settings["min.insync.replicas"] == "2"
    assert settings["default.replication.factor"] == settings["offsets.topic.replication.factor"] == "3"
    assert settings["unclean.leader.election.enable"] == "false"
    # Every voter sees the same elected leader.
    state = host.run("sudo cat /var/lib/kafka/kraft-combined-logs/__cluster_metadata-0/quorum-state").stdout
    assert re.search(r'"leaderId":[1-3]\b', state), state


def test_every_topic_has_three_in_sync_replicas(machine):
    health = kafka_health(machine(APPS[0]))
    assert health["brokers"] == [1, 2, 3]
    assert health["fewest_replicas"] == 3
    assert health["under_replicated"] == 0 and health["offline"] == 0, health
    # Leadership of the job topics is spread: no broker leads them all.
    assert len(health["leaders"]) == 3, health["leaders"]


@pytest.mark.parametrize("name", APPS)
def test_app_node_uses_every_broker_and_the_db(machine, name):
    host = machine(name)
    env = host.run("sudo cat /etc/joblab/joblab.env").stdout
    assert "JOBLAB_KAFKA_BOOTSTRAP=%s\n" % ",".join("%s:9092" % ip(b) for b in BROKERS) in env
    assert "JOBLAB_KAFKA_REPLICATION=3\n" in env
    assert "@%s:5432/" % ip(DBS[0]) in env
    assert host.run("sudo service supervisord status").rc == 0
    assert host.run("curl -s -m 5 http://127.0.0.1/readyz").stdout.count('"ok"') == 2


def test_all_job_workers_share_one_group(machine):
    workers = int(SETTINGS["LAB_JOB_WORKERS"]) * len(APPS)
    # A join may still be settling right after provisioning: bounded wait.
    deadline = time.monotonic() + 60
    while kafka_health(machine(APPS[0]))["workers"] != workers and time.monotonic() < deadline:
        time.sleep(2)
    assert kafka_health(machine(APPS[0]))["workers"] == workers
    assert workers <= int(SETTINGS["LAB_KAFKA_PARTITIONS"]), "more job workers than partitions: some idle"


def test_db_admits_each_app_node(machine):
    host = machine(DBS[0])
    hba = host.run("sudo sh -c 'cat /etc/postgresql/*/main/pg_hba.conf'").stdout
    for name in APPS:
        assert "%s/32    scram-sha-256" % ip(name) in hba
    assert host.run("sudo service postgresql status").rc == 0


def test_lb_lists_every_app_node_serving(machine):
    out = machine(LBS[0]).run("sudo /usr/local/sbin/joblab-lb status").stdout.split("\n")
    assert sorted(line for line in out if line) == sorted("%s:80 serving" % ip(n) for n in APPS)


def test_lb_spreads_requests_over_the_nodes(machine, token):
    def served(name):
        log = machine(name).run("sudo cat /var/log/nginx/access.log").stdout
        return sum(1 for line in log.splitlines() if line.startswith(ip(LBS[0]) + " ") and "/v1/info" in line)

    before = {n: served(n) for n in APPS}
    for _ in range(20):
        assert http.call(BASE, "GET", "/v1/info", token)[0] == 200
    gained = {n: served(n) - before[n] for n in APPS}
    assert all(v > 0 for v in gained.values()), gained


def test_a_job_through_the_lb_succeeds(token):
    status, body = http.call(BASE, "POST", "/v1/jobs", token, {"type": "sum", "args": {"numbers": [2, 3]}})
    assert status == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = http.call(BASE, "GET", "/v1/jobs/" + body["id"], token)[1]
        if job["status"] == "succeeded":
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded" and http.call(BASE, "GET", "/v1/jobs/%s/result" % body["id"], token)[1]


def test_metrics_are_not_served_through_the_lb():
    with pytest.raises(http.HTTPStatusError) as refused:
        http.call(BASE, "GET", "/metrics")
    assert refused.value.status == 403


def test_fab_status_reports_the_whole_cluster():
    out = fab("status").stdout
    assert out.count("quorum    leader") == len(BROKERS)
    assert out.count("0 under-replicated, 0 offline") == len(APPS)
    assert out.count("serving") >= len(APPS)


def lb_state(lb, node):
    for line in lb.run("sudo /usr/local/sbin/joblab-lb status").stdout.splitlines():
        if line.startswith(ip(node) + ":80 "):
            return line.split()[1]
    raise AssertionError("%s is not on the lb's list" % node)


def wait_lb_state(lb, node, state, seconds=20):
    deadline = time.monotonic() + seconds
    while lb_state(lb, node) != state:
        assert time.monotonic() < deadline, "%s not %s after %d s: %s" % (node, state, seconds, lb_state(lb, node))
        time.sleep(0.5)


def test_lb_keeps_a_node_whose_gunicorn_is_down_out_until_it_is_back(machine, token):
    # What nginx's passive checks cannot do: the node's own nginx answers (502, for gunicorn), so
    # every such answer would reach a client. The lb's watch takes the node out on its /healthz.
    lb, node = machine(LBS[0]), APPS[-1]
    assert lb.run("sudo service joblab-lb status").rc == 0
    web = "sudo /usr/local/envs/supervisor/bin/supervisorctl -c /etc/supervisord.conf %s joblab-web"
    assert machine(node).run(web % "stop").rc == 0
    try:
        wait_lb_state(lb, node, "unhealthy")
        assert "server %s:80 down;" % ip(node) in lb.run("sudo cat /etc/nginx/joblab-upstream.conf").stdout
        codes = [http.call(BASE, "POST", "/v1/jobs", token, {"type": "sum", "args": {"numbers": [n]}})[0]
                 for n in range(20)]
        assert codes == [202] * 20
    finally:
        machine(node).run(web % "start")
    wait_lb_state(lb, node, "serving")
    log = lb.run("sudo cat /var/log/joblab-lb.log").stdout
    assert "%s:80 failed its health check" % ip(node) in log and "%s:80 passes its health check again" % ip(node) in log


def test_lb_never_drains_its_last_serving_node(machine):
    lb = machine(LBS[0])
    first, rest = APPS[0], APPS[1:]
    try:
        for name in rest:
            assert lb.run("sudo /usr/local/sbin/joblab-lb drain %s" % ip(name)).rc == 0
        refused = lb.run("sudo /usr/local/sbin/joblab-lb drain %s" % ip(first))
        assert refused.rc == 1 and "is the last app node serving: not drained" in refused.stderr
        upstream = lb.run("sudo cat /etc/nginx/joblab-upstream.conf").stdout
        assert "server %s:80 max_fails=1 fail_timeout=5s;" % ip(first) in upstream
        assert all("server %s:80 down;" % ip(n) in upstream for n in rest)
        assert lb.run("sudo /usr/local/sbin/joblab-lb drain nosuchnode").rc == 1
    finally:
        for name in rest:
            lb.run("sudo /usr/local/sbin/joblab-lb undrain %s" % ip(name))
    assert all("%s:80 serving" % ip(n) in lb.run("sudo /usr/local/sbin/joblab-lb status").stdout for n in APPS)
