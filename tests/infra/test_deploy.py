"""fab deploy / rollback / scale against the running lab, under steady HTTP load through nginx
(127.0.0.1:$LAB_HTTP_PORT): no failed request, the new version served, no orphaned gunicorn,
no job lost. The tests run in order: each starts from the state the previous one left."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time

import pytest
import testinfra

from tests.infra.conftest import APP_USER, ROOT
from tests.infra.load import Load, call

FAB = os.path.join(os.path.dirname(sys.executable), "fab")
pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def app_host(request):
    return testinfra.get_host("ssh://app", ssh_config=request.config.option.ssh_config)


def source_tree(tmp_path, version, patch=None):
    """The committed tree with another version number (and optionally a change to the app)."""
    dest = tmp_path / ("src-" + version.replace("+", "-"))
    dest.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    tar_path = dest / "tree.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest)
    tar_path.unlink()
    pyproject = dest / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "%s"' % version, 1))
    if patch:
        patch(dest)
    return str(dest)


def fab(*args):
    return subprocess.run([FAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def served_version(token):
    return call("GET", "/v1/info", token)[1]["version"]


def gunicorn_processes(app_host):
    """(pid, ppid, args) of the app user's gunicorn processes, from ONE ps snapshot (asking per
    attribute races with processes that exit meanwhile)."""
    out = app_host.run("ps -u %s -o pid=,ppid=,args=" % APP_USER).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    return [(int(r[0]), int(r[1]), r[2]) for r in rows if len(r) == 3 and "gunicorn" in r[2]]


def assert_no_orphans(app_host, seconds=60):
    """One supervised wrapper, one master (the pidfile's), its workers; nothing else named gunicorn.
    A replaced master finishes its in-flight requests before it exits (graceful timeout 30 s), so
    the final state is awaited, bounded."""
    deadline = time.monotonic() + seconds
    while True:
        pidfile = int(app_host.run("sudo cat /var/lib/joblab/gunicorn.pid").stdout.strip())
        procs = gunicorn_processes(app_host)
        others = [p for p in procs if "joblab-gunicorn" not in p[2]]
        masters = [p for p in others if all(q[0] != p[1] for q in others)]
        workers = [p for p in procs if p[1] == pidfile]
        if [p[0] for p in masters] == [pidfile] and len(procs) == 1 + 1 + len(workers):  # wrapper + master + workers
            return
        if time.monotonic() > deadline:
            raise AssertionError("gunicorn processes (pid, ppid, args), master %d: %r" % (pidfile, procs))
        time.sleep(1)


def assert_jobs_done(load, token):
    deadline = time.monotonic() + 120
    pending = [j for j in load.job_ids if j]
    while pending and time.monotonic() < deadline:
        pending = [j for j in pending if call("GET", "/v1/jobs/" + j, token)[1]["status"] != "succeeded"]
        time.sleep(0.5)
    assert pending == [], "%d of %d jobs not succeeded" % (len(pending), len(load.job_ids))


SEEN = {}  # what earlier tests in this module observed


def test_deploy_under_load(tmp_path, token, app_host):
    before = SEEN["before"] = served_version(token)
    new = "0.1.0+deploy%d" % time.time()
    src = source_tree(tmp_path, new)
    with Load(token) as load:
        run = fab("deploy", "--source=" + src)
    assert run.returncode == 0, run.stdout + run.stderr
    print("deploy: %s; requests ok=%d failed=%d" % (run.stdout.strip(), load.ok, len(load.failures)))
    assert load.failures == [] and load.ok > 20
    assert before != new and served_version(token) == new
    # The wheel's staging directory (a fresh mktemp -d per deploy) is gone.
    assert app_host.run("ls -d /var/tmp/joblab-stage.* 2>/dev/null").stdout.strip() == ""
    assert_no_orphans(app_host)
    assert_jobs_done(load, token)


def test_rollback_under_load(token, app_host):
    with Load(token) as load:
        run = fab("rollback")
    assert run.returncode == 0, run.stdout + run.stderr
    print("rollback: %s; requests ok=%d failed=%d" % (run.stdout.strip(), load.ok, len(load.failures)))
    assert load.failures == [] and served_version(token) == SEEN["before"]
    assert_no_orphans(app_host)
    assert_jobs_done(load, token)


def test_scale_under_load(token, app_host):
    with Load(token) as load:
        up, down = fab("scale", "--web=+1"), fab("scale", "--web=-1")
    assert up.returncode == 0 and down.returncode == 0, up.stderr + down.stderr
    print("scale: requests ok=%d failed=%d" % (load.ok, len(load.failures)))
    assert load.failures == []
    assert_no_orphans(app_host)


def test_a_release_failing_its_health_check_is_rolled_back(tmp_path, token, app_host):
    def never_ready(dest):
        health = dest / "app" / "api" / "health.py"
        health.write_text(health.read_text().replace('    failed = sorted(', '    checks["drill"] = "broken release"\n    failed = sorted(', 1))

    src = source_tree(tmp_path, "0.1.0+broken", never_ready)
    with Load(token) as load:
        run = fab("deploy", "--source=" + src)
    assert run.returncode != 0 and "rolled back to" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert load.failures == [] and served_version(token) == SEEN["before"]
    assert_no_orphans(app_host)


def test_a_release_that_cannot_start_never_serves(tmp_path, token):
    def crash(dest):
        init = dest / "app" / "__init__.py"
        init.write_text(init.read_text() + '\nraise RuntimeError("this release cannot start")\n')

    src = source_tree(tmp_path, "0.1.0+crash", crash)
    with Load(token) as load:
        run = fab("deploy", "--source=" + src)
    assert run.returncode != 0 and "cannot start" in run.stderr
    assert load.failures == [] and served_version(token) == SEEN["before"]
