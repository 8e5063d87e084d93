"""Prometheus on the sidecar (provision/prometheus.sh) scraping the job API's /metrics through nginx on
the app machine: Debian's package and its init.d service (its own user, enabled at boot, port
9090), promtool on the live files; from this host through the forwarded port: the joblab
target up, the alert rules loaded, submitted jobs counted. nginx serves /metrics to the lab's
machines only: 403 JSON through the host's forwarded port, 200 to the sidecar and the app itself."""
from __future__ import annotations

import shlex
import time
from urllib.parse import quote

import pytest
import testinfra

from tests.infra.conftest import APP_USER, SETTINGS, host_port, machine_ip
from tests.infra.load import BASE as APP_BASE
from tests.infra.load import call as api_call
from tests.support.httpclient import Client, call

testinfra_hosts = ["ssh://sidecar"]

PROM = "http://127.0.0.1:%d" % host_port("sidecar", 9090)
SIDECAR = "%s:9090" % machine_ip("sidecar")
APP_TARGET = "%s:80" % machine_ip("app")
ALERTS = {"JoblabTargetDown", "JoblabWorkerDown", "JoblabLagGrowing", "JoblabOldQueuedJob", "JoblabDeadLetters"}


@pytest.fixture(scope="module")
def app(request):
    return testinfra.get_host("ssh://app", ssh_config=request.config.option.ssh_config, sudo=True)


def prom(path):
    """The `data` of a Prometheus HTTP API answer (GET /api/v1/<path>, from this host)."""
    status, body = call(PROM, "GET", "/api/v1/" + path)
    assert status == 200 and body["status"] == "success", body
    return body["data"]


def poll(what, seconds):
    """``what()`` until it returns something truthy, for at most ``seconds``; its last result."""
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(1)


def target(job):
    """The active target of scrape job ``job``, or None."""
    found = [t for t in prom("targets?state=active")["activeTargets"] if t["labels"]["job"] == job]
    return found[0] if found else None


def submitted():
    """sum(joblab_jobs_submitted_total) as Prometheus has it now; None while it has no sample."""
    result = prom("query?query=" + quote("sum(joblab_jobs_submitted_total)"))["result"]
    return float(result[0]["value"][1]) if result else None


# -- the server on the sidecar ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["prometheus"])
def test_package(host, name):
    assert host.package(name).is_installed


def test_service_enabled_at_boot(host):
    assert host.file("/etc/init.d/prometheus").mode == 0o755
    assert host.run("ls /etc/rc2.d/ | grep -q '^S[0-9][0-9]prometheus$'").rc == 0


def test_service_running(root):
    assert root.run("service prometheus status").rc == 0


def test_runs_as_its_own_user(host):
    assert [p for p in host.process.filter(user="prometheus") if p.args.startswith("/usr/bin/prometheus ")]
    assert not [p for p in host.process.filter(user="root") if p.args.startswith("/usr/bin/prometheus ")]


def test_socket(host):
    # Every interface: docker forwards the host's port to the container's default-bridge
    # address, not to its lab one (provision/prometheus.sh).
    assert host.socket("tcp://0.0.0.0:9090").is_listening


@pytest.mark.parametrize("path, mode, owner", [
    ("/etc/prometheus/prometheus.yml", 0o644, "root"),
    ("/etc/prometheus/alerts.yml", 0o644, "root"),
    ("/etc/default/prometheus", 0o644, "root"),
    ("/var/lib/prometheus/metrics2", 0o755, "prometheus"),
    ("/var/log/prometheus", 0o755, "root"),  # the init script (root) opens the log there
])
def test_managed_file(root, path, mode, owner):
    f = root.file(path)
    assert f.exists and not f.is_symlink and (f.mode, f.user) == (mode, owner)


@pytest.mark.parametrize("command", ["promtool check config /etc/prometheus/prometheus.yml",
                                     "promtool check rules /etc/prometheus/alerts.yml"])
def test_live_files_pass_promtool(host, command):
    out = host.run(command)
    assert out.rc == 0 and "SUCCESS: %d rules found" % len(ALERTS) in out.stdout, out.stdout + out.stderr


def test_a_config_promtool_rejects_is_not_installed(root):
    """provision/prometheus.sh from a tree whose alert rules do not parse: it stops with promtool's
    message, and the live files stay as they were."""
    live = "sha256sum /etc/prometheus/prometheus.yml /etc/prometheus/alerts.yml /etc/default/prometheus"
    before = root.check_output(live)
    tree = root.check_output("mktemp -d")
    try:
        root.run_expect([0], "cp -r /vagrant/provision /vagrant/devops %s/" % tree)
        root.run_expect([0], "sed -i 's/== 0$/== == 0/' %s/devops/prometheus/alerts.yml" % tree)
        env = dict(SETTINGS, LAB_ROOT=tree, LAB_SIDECAR_HOST=machine_ip("sidecar"), LAB_APP_HOST=machine_ip("app"))
        out = root.run("env %s bash %s/provision/prometheus.sh" % (
            " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())), tree))
    finally:
        root.run("rm -rf %s" % tree)
    assert out.rc != 0 and "promtool rejected the new config; /etc/prometheus left as it was" in out.stderr, out.stderr
    assert "FAILED" in out.stderr
    assert root.check_output(live) == before


def test_queue_age_bound_is_the_lab_setting(host):
    rules = host.file("/etc/prometheus/alerts.yml").content_string
    assert "(joblab_oldest_queued_job_age_seconds) > %s\n" % SETTINGS["LAB_ALERT_OLDEST_QUEUED_SECONDS"] in rules


def server_pids(host):
    return sorted(p.pid for p in host.process.filter(comm="prometheus"))


def test_restart_replaces_the_server(root):
    """The init script stops the server it started and starts one in its place: one server, the
    pidfile's, serving again (on the docker lab this needs CAP_SYS_PTRACE, see the Vagrantfile)."""
    before = server_pids(root)
    assert len(before) == 1 and root.check_output("cat /run/prometheus/prometheus.pid") == str(before[0])
    root.run_expect([0], "service prometheus restart")
    after = server_pids(root)
    assert len(after) == 1 and after != before, (before, after)
    assert root.check_output("cat /run/prometheus/prometheus.pid") == str(after[0])

    def serving():
        return (root.run("curl -sf -o /dev/null http://%s/-/ready" % SIDECAR).rc == 0
                and root.run("ss -ltnpH 'sport = :9090' | grep -qF 'pid=%d,'" % after[0]).rc == 0)

    assert poll(serving, 60)


# -- through the forwarded port ---------------------------------------------------------------------
@pytest.mark.parametrize("job, url", [("joblab", "http://%s/metrics" % APP_TARGET),
                                      ("prometheus", "http://%s/metrics" % SIDECAR)])
def test_target_is_up(job, url):
    # The first scrape comes within one interval (15 s) of a (re)start.
    up = poll(lambda: (target(job) or {}).get("health") == "up", 60)
    assert up, target(job)
    assert target(job)["scrapeUrl"] == url


def test_alert_rules_are_loaded():
    groups = prom("rules?type=alert")["groups"]
    assert [g["name"] for g in groups] == ["joblab"]
    assert {r["name"] for r in groups[0]["rules"]} == ALERTS
    assert all(r["health"] in ("ok", "unknown") for r in groups[0]["rules"]), groups


def test_submitted_jobs_are_counted(token):
    before = submitted() or 0.0
    for n in range(3):
        status, _ = api_call("POST", "/v1/jobs", token, {"type": "sum", "args": {"numbers": [n, 1]}})
        assert status == 202

    def counted():
        now = submitted()
        return now if now is not None and now >= before + 3 else None

    # Seen at the next scrape (15 s), when the app counts them.
    assert poll(counted, 60), (before, submitted())


def test_a_dead_letter_fires_its_alert(token):
    """End to end: a job that fails for good (`fail` raises on every attempt) goes to the dead-letter
    topic; the worker counts it, Prometheus scrapes the count and JoblabDeadLetters fires (for: 0m)."""
    status, _ = api_call("POST", "/v1/jobs", token, {"type": "fail", "args": {"message": "for the alert test"}})
    assert status == 202

    def firing():
        return [a for a in prom("alerts")["alerts"]
                if a["labels"]["alertname"] == "JoblabDeadLetters" and a["state"] == "firing"]

    # Retries (about 1.5 s), the next scrape (15 s; the app caches 5 s), the next evaluation (15 s).
    found = poll(firing, 90)
    assert found, prom("alerts")
    assert (found[0]["labels"]["severity"], found[0]["labels"]["instance"]) == ("warning", APP_TARGET)


# -- nginx's /metrics on the app machine ------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics", "/metrics?x=1", "//metrics", "/%6detrics"])
def test_metrics_refused_through_the_forwarded_port(path):
    # From this host: nginx sees the container network's gateway, which is no lab machine.
    client = Client(APP_BASE)
    try:
        status, body, headers = client.raw("GET", path, None)
    finally:
        client.close()
    assert status == 403 and headers.get("content-type") == "application/json"
    assert body == {"status": 403, "error": "Forbidden", "message": "not served to this address"}


def test_metrics_served_to_the_sidecar(host):
    out = host.run("curl -s -i --max-time 10 http://%s/metrics" % machine_ip("app"))
    assert out.rc == 0 and " 200 " in out.stdout.splitlines()[0], out.stdout[:300]
    assert [line for line in out.stdout.splitlines() if line.startswith("joblab_")], out.stdout[:2000]


@pytest.mark.parametrize("address", ["127.0.0.1", machine_ip("app")])
def test_metrics_served_to_the_app_itself(app, address):
    code = app.check_output("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 http://%s/metrics" % address)
    assert code == "200"


@pytest.mark.parametrize("role", ["web", "worker"])
def test_app_processes_keep_their_metrics_in_the_lab_dir(app, role):
    """joblab.env's JOBLAB_METRICS_DIR reached the app: gunicorn's and the job workers' processes
    write their files under it (after the jobs submitted above), as the app user."""
    assert "\nJOBLAB_METRICS_DIR=%s\n" % SETTINGS["LAB_METRICS_DIR"] in app.file("/etc/joblab/joblab.env").content_string
    d = "%s/%s" % (SETTINGS["LAB_METRICS_DIR"], role)
    owners = app.check_output("find %s -maxdepth 1 -name '*.db' -printf '%%u\\n' | sort -u" % d)
    assert owners == APP_USER, owners
