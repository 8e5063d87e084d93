"""The Fabric tasks for real, against the running lab (hosts from .vagrant/ssh-config)."""
import os
import subprocess
import time

import pytest
import testinfra

from fablib import labfile
from tests.infra.conftest import ROOT, SETTINGS, fab
from tests.infra.load import Load

WORKERS = SETTINGS["LAB_JOB_WORKERS"]


@pytest.fixture
def local_yml():
    """lab.local.yml as it was before the test (fab scale --workers writes it), put back after."""
    try:
        with open(labfile.LOCAL_FILE) as fh:
            before = fh.read()
    except FileNotFoundError:
        before = None
    yield
    if before is None:
        if os.path.exists(labfile.LOCAL_FILE):
            os.unlink(labfile.LOCAL_FILE)
    else:
        with open(labfile.LOCAL_FILE, "w") as fh:
            fh.write(before)


def running_job_workers(host):
    out = host.run("supervisorctl -c /etc/supervisord.conf status 'joblab-worker:*'").stdout
    return sum(1 for line in out.splitlines() if " RUNNING " in line)


def test_status_shows_both_hosts_healthy():
    out = fab("status").stdout
    assert "== app (app)" in out and "== sidecar (sidecar)" in out
    assert out.count("running") >= 4 and "NOT running" not in out
    assert "/readyz   HTTP 200" in out and "lag on jobs: 0" in out


def test_scale_web_up_and_down():
    assert "2 -> 3 workers (TTIN x1)" in fab("scale", "--web=+1").stdout
    assert "3 -> 2 workers (TTOU x1)" in fab("scale", "--web=-1").stdout


def test_scale_workers_is_capped_at_the_partitions_then_restored(local_yml):
    out = fab("scale", "--workers=99").stdout
    assert "capped at %s" % SETTINGS["LAB_KAFKA_PARTITIONS"] in out
    assert "%s job workers" % WORKERS in fab("scale", "--workers=%s" % WORKERS).stdout


@pytest.mark.reprovision
def test_scaled_job_workers_are_kept_by_a_reprovision(request, local_yml):
    host = testinfra.get_host("ssh://app", ssh_config=request.config.option.ssh_config, sudo=True)
    scaled = int(WORKERS) + 1
    env = {k: v for k, v in os.environ.items() if k != "LAB_JOB_WORKERS"}
    try:
        assert "%d job workers" % scaled in fab("scale", "--workers=%d" % scaled).stdout
        run = subprocess.run(["vagrant", "provision", "app", "--provision-with", "supervisor"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "numprocs=%d" % scaled in host.file("/etc/supervisord.d/joblab-worker.ini").content_string
        deadline = time.monotonic() + 60
        while running_job_workers(host) != scaled and time.monotonic() < deadline:
            time.sleep(1)
        assert running_job_workers(host) == scaled
    finally:
        fab("scale", "--workers=%s" % WORKERS)


def test_graceful_restart_keeps_serving(token):
    # Under steady HTTP load (submits and reads through nginx): a graceful restart fails none.
    with Load(token) as load:
        fab("restart")
    assert load.failures == [] and load.ok > 0
    assert "/readyz   HTTP 200" in fab("status").stdout


def test_logs_tail():
    out = fab("-H", "app", "logs", "--lines=3").stdout
    assert "/var/log/nginx/access.log" in out and "/var/log/supervisor/supervisord.log" in out


@pytest.mark.parametrize("args, message", [
    (["-H", "no-such-host.invalid", "status"], "fab: no-such-host.invalid: unreachable"),
    (["scale"], "fab: scale needs"),
    (["scale", "--web=0"], "at least 1 is needed"),
])
def test_errors_are_one_line_and_non_zero(args, message):
    run = fab(*args, check=False)
    assert run.returncode != 0 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
