"""fabfile tasks without SSH: their decisions, and the commands they would send (a recording
stand-in for fabric's Connection). The lab suite runs them for real."""
from __future__ import annotations

import base64
import hashlib
import io
import re
import socket
import tarfile
from types import SimpleNamespace

import pytest
from invoke.exceptions import Exit, UnexpectedExit

import fabfile
from fablib.remote import APP_USER
import fablib.releases
import fablib.remote
import fablib.shipping
from fablib import labfile


class Failed(str):
    """An answer that fails the command (non-zero exit) with this text on stderr."""


class UnexpectedCommand(AssertionError):
    """A task ran a command its test did not foresee: the test must say what it expects."""


class Recorder:
    """Answers run/sudo from a table of (command substring -> stdout, a Failed or an exception to
    raise); records every command and upload ("put <remote path>"). A command that matches no
    entry is an error, not a silent success: each test names every command it expects (with ""
    for "succeeds, prints nothing")."""

    def __init__(self, answers=None, host="app"):
        self.host = self.original_host = host
        self.user = "vagrant"
        self.answers = answers or {}
        self.commands = []
        self.uploads = {}

    def _answer(self, cmd, **_kw):
        self.commands.append(cmd)
        for needle, out in self.answers.items():
            if needle in cmd:
                if isinstance(out, BaseException):
                    raise out
                if isinstance(out, Failed):
                    return SimpleNamespace(stdout="", stderr=str(out), ok=False, exited=1, command=cmd)
                return SimpleNamespace(stdout=out, stderr="", ok=True, exited=0, command=cmd)
        raise UnexpectedCommand("no answer for %r (commands so far: %r)" % (cmd, self.commands[:-1]))

    run = sudo = _answer

    def put(self, local, remote):
        self.commands.append("put " + remote)
        if hasattr(local, "getvalue"):
            self.uploads[remote] = local.getvalue()
        else:
            with open(local, "rb") as fh:
                self.uploads[remote] = fh.read()


PIDFILE = "/var/lib/joblab/gunicorn.pid"
GUNICORN = ["/usr/local/envs/joblab/bin/python", "/usr/local/envs/joblab/bin/gunicorn", "-c",
            "/etc/joblab/gunicorn.conf.py"]
STAGE = "/var/tmp/joblab-stage.Ab3dEf9hIj"


def identity(owner, *argv):
    """What process_identity reads on the host: the owner, then the NUL-joined argv in base64."""
    return "%s\n%s\n" % (owner, base64.b64encode("\0".join(argv).encode() + b"\0").decode())


def master_answers(pid, owner="joblab", argv=GUNICORN):
    """A host whose gunicorn pidfile names ``pid``, a live process of ``owner`` running ``argv``."""
    return {"GUNICORN_PIDFILE": PIDFILE + "\n", "head -c 32 " + PIDFILE: "%d\n" % pid,
            "/proc/%d/cmdline" % pid: identity(owner, *argv), "kill -0 %d" % pid: ""}


#: A staging directory's life: lent to the SSH user for the upload, removed afterwards.
STAGE_LIFE = {"chown vagrant " + STAGE: "", "rm -rf " + STAGE: ""}


@pytest.mark.parametrize("spec, current, expected", [
    ("+1", 2, ("TTIN", 1)), ("-1", 3, ("TTOU", 1)), ("5", 2, ("TTIN", 3)), ("2", 4, ("TTOU", 2)),
    ("+3", 1, ("TTIN", 3)),
])
def test_web_scale_signals(spec, current, expected):
    assert fabfile.web_scale_signals(spec, current) == expected


@pytest.mark.parametrize("spec", ["-2", "0", "x", "+", "1.5"])
def test_web_scale_refuses_bad_or_empty_targets(spec):
    with pytest.raises(Exit):
        fabfile.web_scale_signals(spec, 2)


def test_workers_are_capped_at_the_partition_count():
    assert fabfile.capped_workers(2, 4) == (2, False)
    assert fabfile.capped_workers(9, 4) == (4, True)
    with pytest.raises(Exit):
        fabfile.capped_workers(0, 4)


def test_parse_supervisor_status():
    text = ("joblab-web                       RUNNING   pid 12, uptime 0:01:00\n"
            "joblab-worker:joblab-worker-0    STARTING  \n")
    assert fabfile.parse_supervisor_status(text) == [("joblab-web", "RUNNING"),
                                                     ("joblab-worker:joblab-worker-0", "STARTING")]


def test_scale_web_signals_the_master_and_waits_for_the_count():
    c = Recorder(dict(master_answers(4242), **{"seq 60": "3\n", "pgrep -c -P 4242 || true": "2\n",
                                                "-u joblab kill -TTIN 4242": ""}))
    fabfile.scale.body(c, web="+1")
    # Sent as the app user, never root: the kernel itself keeps the signal among joblab's processes.
    assert "-u joblab kill -TTIN 4242" in c.commands
    assert not any(cmd.startswith("kill -TTIN") for cmd in c.commands)


@pytest.fixture
def local_file(tmp_path, monkeypatch):
    path = tmp_path / "lab.local.yml"
    monkeypatch.setattr(labfile, "LOCAL_FILE", str(path))
    monkeypatch.delenv("LAB_JOB_WORKERS", raising=False)
    return path


def test_scale_workers_sets_the_setting_then_renders_it_with_provisioning(capsys, local_file):
    c = Recorder({"JOBLAB_KAFKA_PARTITIONS": "4\n", "test -f /vagrant/provision/lib/common.sh": "",
                  "provision/supervisor.sh": ""})
    fabfile.scale.body(c, workers="6")
    (script,) = [cmd for cmd in c.commands if "provision/supervisor.sh" in cmd]
    assert " LAB_JOB_WORKERS=4 " in script and "LAB_ROOT=/vagrant" in script
    assert labfile.local_settings() == {"LAB_JOB_WORKERS": "4"}
    assert labfile.settings()["LAB_JOB_WORKERS"] == "4"  # what the next provision renders
    assert "capped at 4" in capsys.readouterr().out


def test_scale_workers_that_fails_leaves_the_setting_as_it_was(local_file):
    labfile.save_local_setting("LAB_JOB_WORKERS", "2")
    c = Recorder({"JOBLAB_KAFKA_PARTITIONS": "4\n", "test -f /vagrant/provision/lib/common.sh": "",
                  "provision/supervisor.sh": Failed("supervisorctl update failed")})
    with pytest.raises(Exit, match="provision/supervisor.sh failed"):
        fabfile.scale.body(c, workers="3")
    assert labfile.local_settings() == {"LAB_JOB_WORKERS": "2"}


def test_scale_workers_refuses_when_the_environment_pins_the_count(local_file, monkeypatch):
    monkeypatch.setenv("LAB_JOB_WORKERS", "2")
    with pytest.raises(Exit, match="LAB_JOB_WORKERS=2 in the environment overrides lab.local.yml"):
        fabfile.scale.body(Recorder({"JOBLAB_KAFKA_PARTITIONS": "4\n"}), workers="3")
    assert not local_file.exists()


def test_scale_needs_an_option():
    with pytest.raises(Exit, match="scale needs"):
        fabfile.scale.body(Recorder())


def test_unreachable_host_is_one_line():
    c = Recorder({"test -x": socket.gaierror(-2, "Name or service not known")}, host="nohost")
    with pytest.raises(Exit) as err:
        fabfile.status.body(c)
    assert str(err.value.message) == "fab: nohost: unreachable ([Errno -2] Name or service not known)"


def test_restart_is_graceful_by_default():
    c = Recorder(dict(master_answers(77), **{"test -x": "app\n", "nginx -t": "", "service nginx reload": "",
                                              "-u joblab kill -HUP 77": "", "restart 'joblab-worker:*'": ""}))
    fabfile.restart.body(c)
    assert "nginx -t" in c.commands and "service nginx reload" in c.commands and "-u joblab kill -HUP 77" in c.commands
    assert not any("KILL" in cmd for cmd in c.commands)


def test_hard_restart_kills_only_the_app_users_stragglers():
    c = Recorder({"test -x": "app\n", "service supervisord stop": "", "pkill -KILL -u %s" % APP_USER: "",
                  "service supervisord start": "", "service nginx restart": ""})
    fabfile.restart.body(c, hard=True)
    assert "pkill -KILL -u %s -f 'gunicorn|python -m worker'" % APP_USER in c.commands


def test_source_tarball_ships_the_tree_and_the_roles_artifacts():
    data = fablib.shipping.source_tarball("sidecar")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "provision/kafka.sh" in names and "provision/lib/common.sh" in names and "lab.yml" in names
    assert not any(n.startswith(".cache/artifacts/app") for n in names)


def test_release_and_wheel_versions():
    assert fablib.releases.release_version("20261124002302-0.1.0+deploy1") == "0.1.0+deploy1"
    assert fabfile.wheel_version("/tmp/x/joblab-0.1.1-py3-none-any.whl") == "0.1.1"


def test_build_wheel_from_a_tree_carries_its_version():
    import re

    with open(fabfile.os.path.join(fabfile.ROOT, "pyproject.toml")) as fh:
        declared = re.search(r'^version = "([^"]+)"', fh.read(), re.M).group(1)
    assert fabfile.wheel_version(fabfile.build_wheel(fabfile.ROOT)) == declared


RELEASE_TOOL = fablib.releases.RELEASE_TOOL


def test_rollback_needs_a_previous_release():
    c = Recorder({RELEASE_TOOL + " list": "20260101000000-0.1.0 current\n"})
    with pytest.raises(Exit, match="no previous release"):
        fabfile.rollback.body(c)


def test_releases_are_read_and_switched_by_the_hosts_joblab_release():
    c = Recorder({RELEASE_TOOL + " list": "A-0.1.0 previous\nB-0.1.1\nC-0.1.2 current\n", " activate ": ""})
    assert fablib.releases.list_releases(c) == (["A-0.1.0", "B-0.1.1", "C-0.1.2"], "C-0.1.2", "A-0.1.0")
    fablib.releases.switch_current(c, "B-0.1.1")
    fablib.releases.switch_current(c, "C-0.1.2", "none")
    assert c.commands[-2:] == [RELEASE_TOOL + " activate B-0.1.1", RELEASE_TOOL + " activate C-0.1.2 none"]


def test_a_host_without_joblab_release_is_one_line():
    c = Recorder({RELEASE_TOOL + " list": Failed("sudo: /usr/local/sbin/joblab-release: command not found")})
    with pytest.raises(Exit, match="joblab-release list failed \\(provision the host: fab provision\\)"):
        fablib.releases.list_releases(c)


def test_a_failed_build_is_one_line(tmp_path):
    with pytest.raises(Exit, match="building the app from"):
        fabfile.build_wheel(str(tmp_path))


# -- pids from the app user's pidfiles ----------------------------------------------------------
@pytest.mark.parametrize("owner, argv, reason", [
    ("root", ["/sbin/init"], "pid 9 belongs to root, not joblab"),
    ("root", GUNICORN, "pid 9 belongs to root, not joblab"),
    ("postgres", ["postgres: checkpointer"], "pid 9 belongs to postgres, not joblab"),
    ("joblab", ["sleep", "300"], "pid 9 is not gunicorn: sleep 300"),
    ("joblab", ["python", "/usr/local/bin/joblab-gunicorn", "-c", "/etc/joblab/gunicorn.conf.py"], "is not gunicorn"),
    ("joblab", ["python", "-m", "worker"], "is not gunicorn"),
    ("joblab", ["bash", "-c", "exec gunicorn"], "is not gunicorn"),
    (None, [], "no live process 9"),
    ("joblab", [], "no live process 9"),  # a zombie: no command line left
])
def test_signal_refusal_names_the_reason(owner, argv, reason):
    assert reason in fablib.remote.signal_refusal(9, owner, argv, app_user="joblab", program="gunicorn")


@pytest.mark.parametrize("argv", [GUNICORN, ["gunicorn", "-c", "x"], ["gunicorn: master [joblab-gunicorn]"],
                                  ["/usr/bin/python3", "/usr/local/bin/gunicorn"]])
def test_the_app_users_gunicorn_may_be_signalled(argv):
    assert fablib.remote.signal_refusal(9, "joblab", argv, app_user="joblab", program="gunicorn") is None


@pytest.mark.parametrize("pid, owner, argv, reason", [
    (1, "root", ["/sbin/init"], "pid 1 belongs to root, not joblab"),
    (4711, "root", ["sleep", "600"], "pid 4711 belongs to root, not joblab"),
    (4712, "joblab", ["sleep", "600"], "pid 4712 is not gunicorn: sleep 600"),
])
@pytest.mark.parametrize("task, kwargs", [(fabfile.restart, {}), (fabfile.scale, {"web": "+1"})])
def test_tasks_refuse_a_pidfile_naming_another_process(task, kwargs, pid, owner, argv, reason):
    c = Recorder(dict(master_answers(pid, owner, argv), **{"test -x": "app\n"}))
    with pytest.raises(Exit) as err:
        task.body(c, **kwargs)
    assert err.value.message == "fab: app: refusing to signal the pid in %s: %s" % (PIDFILE, reason)
    # Refused before anything changed: no signal (kill -0 only asks whether it lives), no nginx reload.
    assert not any(re.search(r"kill -(?!0 )", cmd) or "nginx" in cmd for cmd in c.commands), c.commands


def test_pidfiles_are_read_as_the_app_user_and_bounded():
    c = Recorder({"head -c 32": "/etc/shadow-like text\n"})
    assert fablib.remote.read_pid(c, PIDFILE) is None
    assert c.commands == ["-u joblab head -c 32 %s 2>/dev/null || true" % PIDFILE]


# -- uploads: a fresh root-only directory, checked by sha256, always removed -----------------------
def test_staged_upload_hands_root_a_checked_copy_and_always_cleans_up():
    data = b"wheel bytes"
    c = Recorder(dict(STAGE_LIFE, **{"mktemp -d": STAGE + "\n", "chown -R root:root " + STAGE: "", "use ": "",
                                      "sha256sum": "%s  %s/x.whl\n" % (hashlib.sha256(data).hexdigest(), STAGE)}))
    with fablib.shipping.staged_upload(c, data, "x.whl") as remote:
        assert remote == STAGE + "/x.whl" and c.uploads[remote] == data
        c.sudo("use " + remote)
    assert c.commands == [
        "mktemp -d /var/tmp/joblab-stage.XXXXXXXXXX", "chown vagrant " + STAGE, "put %s/x.whl" % STAGE,
        "chown -R root:root " + STAGE, "sha256sum %s/x.whl" % STAGE, "use %s/x.whl" % STAGE, "rm -rf " + STAGE]


def test_staged_upload_refuses_an_odd_mktemp_answer():
    with pytest.raises(Exit, match="not a staging directory"):
        with fablib.shipping.staged_upload(Recorder({"mktemp -d": "/var/tmp/joblab\n"}), b"x", "x.whl"):
            pass


@pytest.fixture
def local_wheel(tmp_path, monkeypatch):
    """deploy without building: a fake joblab-0.2.0 wheel."""
    wheel = tmp_path / "joblab-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    monkeypatch.setattr(fabfile, "build_wheel", lambda source: str(wheel))
    return wheel


RELEASES = dict(STAGE_LIFE, **{RELEASE_TOOL + " list": "20260101000000-0.1.0 current\n",
                               "JOBLAB_ENV_PREFIX": "/usr/local/envs/joblab\n", "JOBLAB_DATABASE_URL": "postgresql\n",
                               "mktemp -d": STAGE + "\n", "chown -R root:root " + STAGE: "",
                               RELEASE_TOOL + " install": "/opt/joblab/releases/20260102000000-0.1.0\n",
                               RELEASE_TOOL + " remove": ""})


def test_deploy_refuses_a_wheel_that_changed_in_transit(local_wheel):
    c = Recorder(dict(RELEASES, **{"sha256sum": "%s  %s/%s\n" % ("0" * 64, STAGE, local_wheel.name)}))
    with pytest.raises(Exit) as err:
        fabfile.deploy.body(c)
    assert err.value.message == ("fab: app: the uploaded %s does not match the local file (sha256 0000000000000000, "
                                 "expected %s); nothing was installed"
                                 % (local_wheel.name, hashlib.sha256(local_wheel.read_bytes()).hexdigest()[:16]))
    assert not any("pip" in cmd or "joblab-release install" in cmd for cmd in c.commands)
    assert c.commands[-1] == "rm -rf " + STAGE


def test_deploy_installs_from_the_stage_and_removes_it_when_the_install_fails(local_wheel):
    digest = hashlib.sha256(local_wheel.read_bytes()).hexdigest()
    failed = UnexpectedExit(SimpleNamespace(stdout="", stderr="ERROR: no space left", exited=1, command="pip"))
    c = Recorder(dict(RELEASES, **{"sha256sum": "%s  x\n" % digest, "--prefer-binary": failed}))
    with pytest.raises(Exit, match="failed before the switch: ERROR: no space left; still serving"):
        fabfile.deploy.body(c)
    (install,) = [cmd for cmd in c.commands if "joblab-release install" in cmd]
    assert install.endswith(" %s/%s" % (STAGE, local_wheel.name))
    assert RELEASE_TOOL + " remove 20260102000000-0.1.0" in c.commands
    assert c.commands[-1] == "rm -rf " + STAGE


def test_provision_of_another_host_runs_from_a_checked_stage_and_cleans_up(monkeypatch):
    tarball = b"tar.gz bytes"
    monkeypatch.setattr(fabfile, "source_tarball", lambda role: tarball)
    c = Recorder(dict(STAGE_LIFE, **{"test -f /vagrant": Failed(""), "mktemp -d": STAGE + "\n",
                                      "chown -R root:root " + STAGE: "", "mkdir " + STAGE + "/tree": "",
                                      "tar -xzf": "", "sha256sum": "%s  x\n" % hashlib.sha256(tarball).hexdigest(),
                                      "ca-certs.sh": "", "base.sh": "", "python-env.sh": Failed("no Python 3.9+")}),
                 host="rhel6.example")
    with pytest.raises(Exit, match=r"provision/python-env.sh failed \(exit 1\): no Python 3.9\+"):
        fabfile.provision.body(c, role="app")
    assert c.uploads == {STAGE + "/joblab-provision.tar.gz": tarball}
    scripts = [cmd for cmd in c.commands if cmd.startswith("env ")]
    assert scripts and all("LAB_ROOT=%s/tree " % STAGE in cmd for cmd in scripts)
    assert "tar -xzf %s/joblab-provision.tar.gz --no-same-owner" % STAGE in " ".join(c.commands)
    assert not any("/var/tmp/joblab-provision" in cmd for cmd in c.commands)
    assert c.commands[-1] == "rm -rf " + STAGE


@pytest.mark.parametrize("scheme, extra", [("postgresql", "[postgresql]"), ("mssql", "[mssql]"), ("sqlite", "")])
def test_deploy_installs_the_driver_of_the_hosts_store(scheme, extra):
    c = Recorder({"JOBLAB_DATABASE_URL": scheme + "\n"})
    assert fablib.remote.store_extra(c) == extra
    assert "echo \"$JOBLAB_DATABASE_URL\"" not in c.commands[0]  # never the whole URL: it holds the password
