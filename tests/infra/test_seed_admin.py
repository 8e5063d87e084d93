"""The seed's "Administration Commands", typed on the app machine exactly as its README writes
them, each followed by what the seed promises: the service is back, a job submitted through
nginx (127.0.0.1:$LAB_HTTP_PORT on the host) succeeds, TTIN/TTOU move the gunicorn worker count
by one, and every job accepted before the command still succeeds (none lost).

`$masterpid` is taken as an operator does on this lab: from gunicorn's pidfile (docs/operations.md).
The tests run in file order and leave the lab as they found it (TTIN then TTOU)."""
from __future__ import annotations

import shlex
import time

import pytest

from tests.infra.load import call

testinfra_hosts = ["ssh://app"]

PIDFILE = "/var/lib/joblab/gunicorn.pid"
MASTERPID = "masterpid=$(cat %s); " % PIDFILE


def as_root(host, command):
    """``command`` in a root shell, as an operator with sudo types it."""
    return host.run("sudo bash -c %s" % shlex.quote(command))


def wait_for(what, probe, seconds=90):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    pytest.fail("%s: not within %d s (last: %r)" % (what, seconds, last))


def master_pid(host):
    out = as_root(host, "cat %s" % PIDFILE)
    return int(out.stdout) if out.rc == 0 and out.stdout.strip().isdigit() else None


def gunicorn_workers(host, master):
    """Live gunicorn workers of ``master`` (its children)."""
    out = as_root(host, "ps -o pid= --ppid %d" % master)
    return len(out.stdout.split())


def web_is_up(host):
    """joblab-web RUNNING under supervisor and its master's pid in the pidfile, alive."""
    status = as_root(host, "supervisorctl status joblab-web").stdout
    pid = master_pid(host)
    return "RUNNING" in status and pid is not None and as_root(host, "kill -0 %d" % pid).rc == 0 and pid


def new_master(host, old):
    """The master's pid once joblab-web is up under a master other than ``old``."""
    pid = web_is_up(host)
    return pid if pid and pid != old else None


def submit(token, args=None):
    status, body = call("POST", "/v1/jobs", token, {"type": "sleep", "args": args or {"seconds": 0.5}})
    assert status == 202, body
    return body["id"]


def succeeded(token, job_ids, seconds=90):
    def pending():
        left = []
        for job_id in job_ids:
            try:
                status = call("GET", "/v1/jobs/" + job_id, token)[1]["status"]
            except OSError:  # nginx or gunicorn still coming back
                status = "unknown"
            assert status not in ("failed", "cancelled"), "job %s is %s" % (job_id, status)
            if status != "succeeded":
                left.append(job_id)
        return left

    wait_for("jobs %s succeeded" % job_ids, lambda: not pending(), seconds)


@pytest.fixture(scope="module")
def before_each(host, token):
    """Jobs accepted just before a command: they must all succeed after it."""
    return lambda: [submit(token) for _ in range(3)]


def run_seed_command(host, command):
    out = as_root(host, command)
    assert out.rc == 0, "%r failed (rc %d): %s" % (command, out.rc, out.stderr.strip())


def test_service_nginx_restart(host, token, before_each):
    jobs = before_each()
    run_seed_command(host, "service nginx restart")
    wait_for("nginx running", lambda: as_root(host, "service nginx status").rc == 0)
    succeeded(token, jobs + [submit(token)])


def test_service_supervisord_restart(host, token, before_each):
    jobs = before_each()
    old = master_pid(host)
    run_seed_command(host, "service supervisord restart")
    wait_for("joblab-web back under a new master", lambda: new_master(host, old))
    wait_for("job workers RUNNING", lambda: all(
        " RUNNING " in line for line in as_root(host, "supervisorctl status 'joblab-worker:*'").stdout.splitlines()))
    succeeded(token, jobs + [submit(token)])


def test_killall_s_kill_gunicorn(host, token, before_each):
    jobs = before_each()
    old = master_pid(host)
    workers = gunicorn_workers(host, old)
    run_seed_command(host, "killall -s KILL gunicorn")
    # supervisor notices the program died and starts it again (autorestart); the same number
    # of workers as before comes back.
    new = wait_for("gunicorn started again by supervisor", lambda: new_master(host, old))
    wait_for("%d gunicorn workers" % workers, lambda: gunicorn_workers(host, new) == workers)
    succeeded(token, jobs + [submit(token)])


@pytest.mark.parametrize("signal, change", [("TTIN", +1), ("TTOU", -1)])
def test_kill_ttin_ttou_masterpid(host, token, before_each, signal, change):
    jobs = before_each()
    master = wait_for("joblab-web up", lambda: web_is_up(host))
    wait_for("the worker count settled", lambda: gunicorn_workers(host, master) > 0)
    workers = gunicorn_workers(host, master)
    run_seed_command(host, MASTERPID + "kill -%s $masterpid" % signal)
    wait_for("%d gunicorn workers after %s" % (workers + change, signal),
             lambda: gunicorn_workers(host, master) == workers + change)
    assert master_pid(host) == master  # the same master: scaled, not restarted
    succeeded(token, jobs + [submit(token)])
