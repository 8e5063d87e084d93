"""Root never acts through a path or a pid that the app user (joblab) or the kafka user controls:
each test plants what such a user could plant - a link where root opens a file, a bogus pid in a
pidfile, a changed upload - and shows that root does not follow it. On the lab, as root."""
from __future__ import annotations

import os
import pathlib
import shlex
import time

import pytest
import testinfra
from fabric import Config, Connection
from invoke.exceptions import Exit

import fabfile
from tests.infra.conftest import APP_USER, ROOT, SETTINGS, fab

CANARY = "/etc/joblab-canary"  # root's file, which a followed link would change
PIDFILE = "/var/lib/joblab/gunicorn.pid"


@pytest.fixture(scope="module")
def app(request):
    return testinfra.get_host("ssh://app", ssh_config=request.config.option.ssh_config, sudo=True)


@pytest.fixture(scope="module")
def sidecar(request):
    return testinfra.get_host("ssh://sidecar", ssh_config=request.config.option.ssh_config, sudo=True)


def as_user(user, command):
    return "sudo -u %s sh -c %s" % (user, shlex.quote(command))


def wait_until(host, command, seconds=90):
    """Poll ``command`` on ``host`` until it succeeds (bounded); its last result."""
    deadline = time.monotonic() + seconds
    while True:
        res = host.run(command)
        if res.rc == 0 or time.monotonic() > deadline:
            return res
        time.sleep(1)


@pytest.fixture
def canary(request):
    """A root-owned file with known content on the host named by the test's ``host_name``."""
    host = request.getfixturevalue(request.param)
    host.run_expect([0], "printf 'canary\\n' >%s && chmod 0644 %s" % (CANARY, CANARY))
    yield host
    host.run("rm -f %s" % CANARY)


def assert_canary_untouched(host):
    f = host.file(CANARY)
    assert (f.is_file, f.user, f.group, f.mode, f.content_string) == (True, "root", "root", 0o644, "canary\n")


# -- 1. supervisord (root) opens the programs' logs in /var/log/joblab -------------------------------
def test_app_user_cannot_plant_a_link_where_supervisord_opens_logs(app):
    d = app.file("/var/log/joblab")
    assert (d.user, d.group, d.mode) == ("root", APP_USER, 0o750)
    planted = app.run(as_user(APP_USER, "ln -s %s /var/log/joblab/web-access.log.1" % CANARY))
    assert planted.rc != 0 and "Permission denied" in planted.stderr
    assert not app.file("/var/log/joblab/web-access.log.1").exists


@pytest.mark.parametrize("name", ["web-access.log", "web-error.log", "joblab-worker-0.log"])
def test_program_logs_are_roots_regular_files(app, name):
    f = app.file("/var/log/joblab/" + name)
    assert f.is_file and not f.is_symlink and f.user == "root"
    # ...and the app user can still read its own logs (the directory's group).
    assert app.run(as_user(APP_USER, "tail -n 1 /var/log/joblab/%s >/dev/null" % name)).rc == 0


@pytest.mark.parametrize("canary", ["app"], indirect=True)
def test_a_link_left_in_the_log_dir_is_removed_not_followed(canary):
    """A host provisioned before the directory was root's may hold a link the app user planted:
    provisioning removes it, and supervisord reopening its log creates a file, not the target."""
    app = canary
    app.run_expect([0], "ln -sfn %s /var/log/joblab/web-access.log" % CANARY)  # as the app user could have
    env = dict(SETTINGS, LAB_ROOT="/vagrant")
    out = app.run("env %s bash /vagrant/provision/supervisor.sh" % " ".join(
        "%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())))
    assert out.rc == 0 and "removed links from /var/log/joblab" in out.stdout, out.stdout + out.stderr
    app.run_expect([0], "supervisorctl -c /etc/supervisord.conf restart joblab-web")
    assert wait_until(app, "curl -sf -o /dev/null http://127.0.0.1/readyz").rc == 0
    log = app.file("/var/log/joblab/web-access.log")
    assert log.is_file and not log.is_symlink and log.user == "root"
    assert_canary_untouched(app)


# -- 2. /etc/init.d/kafka (root) and the kafka user's directories ------------------------------------
@pytest.mark.parametrize("canary", ["sidecar"], indirect=True)
def test_kafka_init_never_follows_a_link_in_kafkas_log_dir(canary):
    """kafka.out is opened by the broker (as kafka), never by root: a link to root's file there
    makes the start fail (kafka may not write the target), and the target stays as it was."""
    sidecar = canary
    console = "/var/log/kafka/kafka.out"
    sidecar.run_expect([0], as_user("kafka", "ln -sfn %s %s" % (CANARY, console)))
    try:
        restart = sidecar.run("service kafka restart")
        assert restart.rc != 0 and "Permission denied" in restart.stdout + restart.stderr, restart.stdout
        assert_canary_untouched(sidecar)
    finally:
        sidecar.run(as_user("kafka", "rm -f %s" % console))
        started = sidecar.run("service kafka start")
    assert started.rc == 0, started.stdout + started.stderr
    # The broker opened its console log itself: the kafka user's file, not root's.
    assert sidecar.file(console).user == "kafka" and not sidecar.file(console).is_symlink
    # The broker's pidfile is written by the broker's own shell, as kafka.
    assert sidecar.file("/var/run/kafka/kafka.pid").user == "kafka"


def test_kafka_init_lock_is_not_in_a_world_writable_dir(sidecar):
    # /var/lock is /run/lock (1777) on Debian: any user could plant the lock name there.
    lock = sidecar.file("/var/run/kafka.init.lock")
    assert lock.is_file and lock.user == "root"
    assert sidecar.file("/var/run").user == "root" and not sidecar.file("/var/run").mode & 0o022


# -- 4. fab signals only the app user's gunicorn ---------------------------------------------------
@pytest.fixture
def planted_pid(request, app):
    """The gunicorn pidfile, rewritten by the app user to name another process; restored after."""
    kind = request.param
    real = app.check_output("cat %s" % PIDFILE)
    sleeper = None
    if kind == "pid 1":
        pid = 1
    else:
        user = "root" if kind == "a root sleep" else APP_USER
        sleeper = pid = int(app.check_output(as_user(user, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")))
    app.run_expect([0], as_user(APP_USER, "echo %d >%s" % (pid, PIDFILE)))
    yield pid, ("root" if kind != "a sleep of the app user" else APP_USER)
    app.run(as_user(APP_USER, "echo %s >%s" % (real, PIDFILE)))
    if sleeper:
        app.run("kill %d" % sleeper)


def process_state(app, pid):
    """ps's STAT of ``pid`` (S: sleeping; T: stopped, e.g. by SIGTTIN; empty: gone)."""
    return app.run("ps -o stat= -p %d" % pid).stdout.strip()


@pytest.mark.parametrize("planted_pid", ["pid 1", "a root sleep", "a sleep of the app user"], indirect=True)
@pytest.mark.parametrize("args", [["restart"], ["scale", "--web=+1"]])
def test_fab_refuses_to_signal_a_planted_pid(app, planted_pid, args):
    pid, owner = planted_pid
    before = process_state(app, pid)
    run = fab(*args, check=False)
    reason = ("pid %d belongs to root, not %s" % (pid, APP_USER) if owner == "root"
              else "pid %d is not gunicorn: sleep 600" % pid)
    assert run.returncode != 0 and run.stderr.strip() == (
        "fab: app: refusing to signal the pid in %s: %s" % (PIDFILE, reason)), run.stderr
    # Untouched: alive and in the same state (HUP would have ended a sleep, TTIN stopped it).
    assert process_state(app, pid) == before and before[:1] in ("S", "R")


# -- 3. fab deploy installs only what it uploaded ---------------------------------------------------
def test_deploy_refuses_a_wheel_changed_after_the_upload(app, request, tmp_path):
    """A wheel that differs on the host from the local one (changed in transit, or swapped by
    someone) is never installed: one-line error, releases and `current` as they were, no stage."""
    releases = app.check_output("ls -1 /opt/joblab/releases; readlink /opt/joblab/current")
    # in_stream=False: nothing to forward from pytest's (captured) stdin.
    c = Connection("app", config=Config(runtime_ssh_path=request.config.option.ssh_config,
                                        overrides={"run": {"in_stream": False}}))
    real_put = c.put

    def put_a_changed_copy(local, remote):
        changed = tmp_path / os.path.basename(remote)
        changed.write_bytes(pathlib.Path(local).read_bytes() + b"\0")
        return real_put(str(changed), remote)

    c.put = put_a_changed_copy
    try:
        with pytest.raises(Exit) as err:
            fabfile.deploy.body(c, source=ROOT)
    finally:
        c.close()
    assert "does not match the local file" in err.value.message and "nothing was installed" in err.value.message
    assert len(err.value.message.splitlines()) == 1
    assert app.check_output("ls -1 /opt/joblab/releases; readlink /opt/joblab/current") == releases
    assert app.run("ls -d /var/tmp/joblab-stage.* 2>/dev/null").stdout.strip() == ""


# -- 5. the metrics directory is made by the app user, never by root (provision/app.sh) -------------
@pytest.fixture
def metrics_dir_planted_link(app):
    """The app user swaps its metrics directory (in its home) for a link to a directory of root's;
    the real one comes back afterwards."""
    d, target = SETTINGS["LAB_METRICS_DIR"], CANARY + ".d"
    app.run_expect([0], "install -d -m 0755 -o root -g root %s" % target)
    app.run_expect([0], as_user(APP_USER, "mv %s %s.away && ln -s %s %s" % (d, d, target, d)))
    yield target
    app.run(as_user(APP_USER, "rm -f %s && mv %s.away %s" % (d, d, d)))
    app.run("rmdir %s" % target)


def test_app_provisioning_never_follows_a_link_at_the_metrics_dir(app, metrics_dir_planted_link):
    """Root would make the link's target the app user's (install -d -o, chown, chmod follow it);
    app.sh makes the directory as the app user, whom the kernel refuses, and stops in one line."""
    target = metrics_dir_planted_link
    env = dict(SETTINGS, LAB_ROOT="/vagrant")
    out = app.run("env %s bash /vagrant/provision/app.sh" % " ".join(
        "%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())))
    assert out.rc != 0 and "cannot make LAB_METRICS_DIR=%s" % SETTINGS["LAB_METRICS_DIR"] in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    d = app.file(target)
    assert (d.is_directory, d.user, d.group, d.mode) == (True, "root", "root", 0o755)
