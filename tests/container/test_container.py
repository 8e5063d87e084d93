"""The seed's Docker container (dockerfile/), as `make container` built it (make container-test
builds it first): a job end to end through the published port, processes not root, no secret
or data baked into the image, `docker stop` graceful within its timeout with no job lost, the
jobs kept in the volumes for the next container, and the development variant serving an edit of
the mounted working tree after the seed's `service ... restart`s."""
from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from fablib import labfile
from tests.conftest import ROOT
from tests.support import httpclient as http
from tests.support.services import free_port

IMAGE = os.environ.get("CONTAINER_IMAGE", "nginx_gunicorn_flask")
APP_USER = labfile.settings()["LAB_APP_USER"]
STOP_TIMEOUT = 60  # docker stop -t: seconds before docker SIGKILLs


def docker(*args, check=True, timeout=300):
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, "docker %s: %s" % (" ".join(args), (run.stderr or run.stdout)[-2000:])
    return run


class Container:
    """One container of the image, published on a free 127.0.0.1 port."""

    def __init__(self, *args, image=IMAGE):
        self.name = "joblab-test-" + uuid.uuid4().hex[:8]
        self.port = free_port()
        docker("run", "-d", "--name", self.name, "-p", "127.0.0.1:%d:80" % self.port, *args, image)
        self.wait_ready()

    def logs(self):
        run = docker("logs", self.name, check=False)
        return run.stdout + run.stderr

    def running(self):
        return docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() == "true"

    def wait_ready(self, seconds=180):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail("container %s exited:\n%s" % (self.name, self.logs()[-3000:]))
            try:
                if http.call(self.url, "GET", "/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        pytest.fail("container %s not ready in %d s:\n%s" % (self.name, seconds, self.logs()[-3000:]))

    def exec(self, *command, user=None):
        return docker("exec", *(["-u", user] if user else []), self.name, *command)

    def token(self, user):
        """The documented way: docs/container.md."""
        out = self.exec("runuser", "-u", APP_USER, "--", "joblab-exec", "flask", "--app", "app", "users", "create", user)
        return out.stdout.strip().splitlines()[-1]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def call(self, method, path, token, body=None):
        return http.call(self.url, method, path, token, body)

    def submit(self, token, job):
        status, body = self.call("POST", "/v1/jobs", token, job)
        assert status == 202, body
        return body["id"]

    def wait_succeeded(self, token, job_ids, seconds=120):
        deadline = time.monotonic() + seconds
        left = list(job_ids)
        while left and time.monotonic() < deadline:
            statuses = {j: self.call("GET", "/v1/jobs/" + j, token)[1]["status"] for j in left}
            assert not [j for j, s in statuses.items() if s in ("failed", "cancelled")], statuses
            left = [j for j, s in statuses.items() if s != "succeeded"]
            time.sleep(0.5)
        assert left == [], "%d of %d jobs not succeeded in %d s" % (len(left), len(job_ids), seconds)

    def stop(self):
        """docker stop; its wall time."""
        started = time.monotonic()
        docker("stop", "-t", str(STOP_TIMEOUT), self.name, timeout=STOP_TIMEOUT + 60)
        return time.monotonic() - started

    def remove(self):
        docker("rm", "-f", "-v", self.name, check=False)


@pytest.fixture
def containers():
    made = []
    yield lambda *args, **kwargs: made.append(Container(*args, **kwargs)) or made[-1]
    for c in made:
        c.remove()


@pytest.fixture
def volumes():
    names = {path: "joblab-test-%s-%s" % (uuid.uuid4().hex[:8], path.rsplit("/", 1)[-1])
             for path in ("/var/lib/joblab", "/var/lib/kafka")}
    yield [arg for path, name in names.items() for arg in ("-v", "%s:%s" % (name, path))]
    for name in names.values():
        docker("volume", "rm", "-f", name, check=False)


def test_the_image_holds_no_secret_and_no_data():
    per_instance = ["/etc/joblab/secrets", "/etc/joblab/joblab.env", "/var/lib/joblab", "/var/lib/kafka"]
    out = docker("run", "--rm", "--entrypoint", "find", IMAGE, *per_instance, "-not", "-type", "d", check=False)
    assert out.stdout.split() == []
    assert out.stderr.strip() == "find: '/etc/joblab/joblab.env': No such file or directory"


def test_jobs_end_to_end_graceful_stop_and_kept_by_the_volumes(containers, volumes):
    first = containers(*volumes)
    token = first.token("alice")
    job = first.submit(token, {"type": "sum", "args": {"numbers": [1, 2, 3]}})
    first.wait_succeeded(token, [job])
    assert first.call("GET", "/v1/jobs/%s/result" % job, token)[1]["result"] == {"sum": 6}

    # Nothing of the app runs as root; each service under its own user.
    users = {}
    for line in first.exec("ps", "-eo", "user=,args=").stdout.splitlines():
        user, args = line.split(None, 1)
        users.setdefault(user, []).append(args)
    for pattern in ("gunicorn", "-m worker", "kafka.Kafka", "nginx: worker"):
        owners = {u for u, cmds in users.items() for c in cmds if pattern in c}
        assert owners and "root" not in owners, (pattern, owners)
    secret = first.exec("cat", "/etc/joblab/secrets/app-secret").stdout

    # Jobs in flight when docker stop comes: the worker finishes its job, nothing is lost.
    in_flight = [first.submit(token, {"type": "sleep", "args": {"seconds": 0.5}}) for _ in range(6)]
    took = first.stop()
    assert took < STOP_TIMEOUT - 5, "docker stop took %.1f s (timeout %d s)" % (took, STOP_TIMEOUT)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", first.name).stdout.strip() == "0"
    assert "[container] stopped" in first.logs()

    # A new container on the same volumes: the same user, token and jobs; every job succeeds.
    second = containers(*volumes)
    second.wait_succeeded(token, [job] + in_flight)
    second.wait_succeeded(token, [second.submit(token, {"type": "noop", "args": {}})])
    # Secrets are made at first start, per container: never baked into the image.
    assert second.exec("cat", "/etc/joblab/secrets/app-secret").stdout not in ("", secret)


def test_the_development_variant_serves_the_mounted_working_tree(containers, tmp_path):
    tree = tmp_path / "nginx-gunicorn-flask"
    tree.mkdir()
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-C", ROOT, "--null", "-T", "-", "-cf", str(tmp_path / "tree.tar")], input=files, check=True)
    subprocess.run(["tar", "-C", str(tree), "-xf", str(tmp_path / "tree.tar")], check=True)
    # As the seed runs it: the tree mounted at /opt/apps, nothing else said.
    dev = containers("-v", "%s:/opt/apps" % tree)
    assert "serving the working tree mounted at /opt/apps" in dev.logs()

    # The seed's steps: pip install -e . in the mounted tree, edit, restart nginx and supervisord.
    dev.exec("sh", "-c", "cd /opt/apps && pip install --quiet -e .")
    health = tree / "app" / "api" / "health.py"
    marker = "edited-" + uuid.uuid4().hex[:6]
    text = health.read_text()
    assert text.count('return {"status": "ok"}') == 1
    health.write_text(text.replace('return {"status": "ok"}', 'return {"status": "%s"}' % marker))
    dev.exec("service", "nginx", "restart")
    dev.exec("service", "supervisord", "restart")
    deadline = time.monotonic() + 90
    seen = None
    while time.monotonic() < deadline and seen != marker:
        try:
            seen = http.call(dev.url, "GET", "/healthz", timeout=5)[1]["status"]
        except (OSError, TypeError, KeyError):
            pass
        time.sleep(1)
    assert seen == marker
    token = dev.token("dev")
    dev.wait_succeeded(token, [dev.submit(token, {"type": "sum", "args": {"numbers": [2, 2]}})])


def test_the_postgresql_variant(containers):
    """--build-arg JOBLAB_DB=postgresql (make container JOBLAB_DB=postgresql): the lab's database
    script in the same image, the store on 127.0.0.1."""
    image = IMAGE + ":postgresql"
    env = dict(os.environ, CONTAINER_IMAGE=image, JOBLAB_DB="postgresql")
    build = subprocess.run([os.path.join(ROOT, "provision", "host", "container-build.sh")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    pg = containers(image=image)
    url = pg.exec("grep", "^JOBLAB_DATABASE_URL=", "/etc/joblab/joblab.env").stdout
    assert url.startswith("JOBLAB_DATABASE_URL=postgresql+psycopg://") and "@127.0.0.1:5432/" in url
    token = pg.token("carol")
    pg.wait_succeeded(token, [pg.submit(token, {"type": "sum", "args": {"numbers": [4, 5]}})])
    assert pg.stop() < STOP_TIMEOUT - 5
