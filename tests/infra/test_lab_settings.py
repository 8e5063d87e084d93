"""The seed's "additional setup considerations" are settings of the lab (lab.yml, or an environment
variable of the same name): changed and re-provisioned, each reaches its rendered file and the
running process; a value that cannot work is refused with its reason and changes nothing.
Runs with the re-provision check (it re-provisions the app machine), and puts lab.yml's values
back at the end."""
from __future__ import annotations

import os
import subprocess
import time

import pytest
import testinfra

from tests.infra.conftest import APP_USER, ROOT, SETTINGS
from tests.infra.load import call

pytestmark = pytest.mark.reprovision

CHANGED = {
    "LAB_GUNICORN_MAX_REQUESTS": "1234",
    "LAB_GUNICORN_TIMEOUT": "41",
    "LAB_GUNICORN_WORKERS": "3",
    "LAB_WORKER_CLASS": "sync",
    "LAB_PROXY_CONNECT_TIMEOUT": "7",
    "LAB_PROXY_READ_TIMEOUT": "47",
}
# Where each lands: gunicorn's in /etc/joblab/joblab.env (and the master's environment), nginx's in
# nginx.conf.
GUNICORN = {"LAB_GUNICORN_MAX_REQUESTS": "GUNICORN_MAX_REQUESTS", "LAB_GUNICORN_TIMEOUT": "GUNICORN_TIMEOUT",
            "LAB_GUNICORN_WORKERS": "GUNICORN_WORKERS", "LAB_WORKER_CLASS": "GUNICORN_WORKER_CLASS"}
NGINX = {"LAB_PROXY_CONNECT_TIMEOUT": "proxy_connect_timeout", "LAB_PROXY_READ_TIMEOUT": "proxy_read_timeout"}


def defaults():
    return {name: SETTINGS[name] for name in CHANGED}


def provision(settings, scripts="app,nginx"):
    env = dict(os.environ)
    env.update(settings)
    return subprocess.run(["vagrant", "provision", "app", "--provision-with", scripts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def app(request):
    host = testinfra.get_host("ssh://app", ssh_config=request.config.option.ssh_config, sudo=True)
    yield host
    # Whatever happened, the lab goes back to lab.yml's values.
    provision(defaults())


def applied(host):
    """What the app machine runs with now: {setting: value}, read from the rendered files and the
    running gunicorn master."""
    seen = {}
    env_file = dict(line.split("=", 1) for line in host.file("/etc/joblab/joblab.env").content_string.splitlines()
                    if "=" in line and not line.startswith("#"))
    master = host.run("cat /var/lib/joblab/gunicorn.pid").stdout.strip()
    # Read as the app user: root without CAP_SYS_PTRACE (a container) may not read another user's.
    out = host.run("runuser -u %s -- cat /proc/%s/environ" % (APP_USER, master))
    assert out.rc == 0, out.stderr
    environ = dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)
    for setting, var in GUNICORN.items():
        assert env_file.get(var) == environ.get(var), "%s: file says %r, the running master %r" % (
            var, env_file.get(var), environ.get(var))
        seen[setting] = env_file.get(var)
    conf = host.run("nginx -T").stdout
    for setting, directive in NGINX.items():
        values = {line.split()[1].rstrip(";") for line in conf.splitlines() if line.strip().startswith(directive + " ")}
        assert len(values) == 1, "%s: %s" % (directive, values)
        seen[setting] = values.pop().rstrip("s")
    workers = host.run("ps -o pid= --ppid %s" % master).stdout.split()
    seen["workers running"] = str(len(workers))
    return seen


def job_succeeds(token):
    status, body = call("POST", "/v1/jobs", token, {"type": "sum", "args": {"numbers": [2, 3]}})
    assert status == 202, body
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = call("GET", "/v1/jobs/" + body["id"], token)[1]
        if body["status"] == "succeeded":
            return
        time.sleep(0.5)
    pytest.fail("job %s: %s" % (body["id"], body["status"]))


def wait_for_workers(host, count):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = applied(host)
        if seen["workers running"] == count:
            return seen
        time.sleep(1)
    pytest.fail("gunicorn has %s workers, not %s" % (seen["workers running"], count))


def test_each_setting_reaches_its_file_and_the_running_process(app, token):
    run = provision(CHANGED)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = wait_for_workers(app, CHANGED["LAB_GUNICORN_WORKERS"])
    assert {k: seen[k] for k in CHANGED} == CHANGED
    job_succeeds(token)
    run = provision(defaults())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = wait_for_workers(app, defaults()["LAB_GUNICORN_WORKERS"])
    assert {k: seen[k] for k in CHANGED} == defaults()
    job_succeeds(token)


def test_a_read_timeout_shorter_than_gunicorns_is_refused_and_changes_nothing(app):
    before = app.file("/etc/nginx/nginx.conf").content_string
    run = provision({"LAB_PROXY_READ_TIMEOUT": "20", "LAB_GUNICORN_TIMEOUT": "30"}, scripts="nginx")
    assert run.returncode != 0
    assert "LAB_PROXY_READ_TIMEOUT (20) must be longer than LAB_GUNICORN_TIMEOUT (30)" in run.stdout + run.stderr
    assert app.file("/etc/nginx/nginx.conf").content_string == before


def test_the_longest_job_reaches_the_api_and_the_workers_stop_wait(app, token):
    """LAB_JOB_MAX_SECONDS: the app's JOBLAB_JOB_MAX_SECONDS, and supervisor's stopwaitsecs for the
    job workers derived from it at render time."""
    def rendered():
        env_file = app.file("/etc/joblab/joblab.env").content_string
        ini = app.file("/etc/supervisord.d/joblab-worker.ini").content_string.replace(" ", "")
        return ([line.split("=", 1)[1] for line in env_file.splitlines() if line.startswith("JOBLAB_JOB_MAX_SECONDS=")],
                int(ini.split("stopwaitsecs=")[1].split()[0]))

    default = SETTINGS["LAB_JOB_MAX_SECONDS"]
    assert rendered() == ([default], int(default) + 30)
    try:
        run = provision({"LAB_JOB_MAX_SECONDS": "90"}, scripts="app,supervisor")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert rendered() == (["90"], 120)
        assert sleep_bound(token) == 90  # the API restarted with it: `sleep` accepts up to 90 s
        refused = provision({"LAB_JOB_MAX_SECONDS": "0"}, scripts="app,supervisor")
        assert refused.returncode != 0 and "LAB_JOB_MAX_SECONDS must be 1-3600 seconds" in refused.stdout + refused.stderr
        assert rendered() == (["90"], 120)
    finally:
        run = provision({"LAB_JOB_MAX_SECONDS": default}, scripts="app,supervisor")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert rendered() == ([default], int(default) + 30)
    assert sleep_bound(token) == float(default)


def sleep_bound(token):
    """The longest `sleep` the running API accepts, as its OpenAPI document says (validation reads
    the same bound: tests/unit/test_config.py)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            spec = call("GET", "/openapi.json", token)[1]
            return spec["components"]["schemas"]["SleepArgs"]["properties"]["seconds"]["maximum"]
        except OSError:  # gunicorn restarting after the re-provision
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
