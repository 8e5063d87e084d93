"""fabfile tasks without SSH: their decisions, and the commands they would send (a recording
stand-in for fabric's Connection). The lab suite runs them for real."""
from __future__ import annotations

import io
import socket
import tarfile
from types import SimpleNamespace

import pytest
from invoke.exceptions import Exit

import fabfile
import fablib.releases
import fablib.shipping


class Recorder:
    """Answers run/sudo from a table of (command substring -> stdout); records every command."""

    def __init__(self, answers=None, host="app"):
        self.host = self.original_host = host
        self.answers = answers or {}
        self.commands = []

    def _answer(self, cmd, **_kw):
        self.commands.append(cmd)
        for needle, out in self.answers.items():
            if needle in cmd:
                if isinstance(out, BaseException):
                    raise out
                return SimpleNamespace(stdout=out, stderr="", ok=True, exited=0, command=cmd)
        return SimpleNamespace(stdout="", stderr="", ok=True, exited=0, command=cmd)

    run = sudo = _answer


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
    c = Recorder({"seq 60": "3\n", "GUNICORN_PIDFILE": "/var/lib/joblab/gunicorn.pid\n",
                  "cat /var/lib/joblab/gunicorn.pid": "4242\n", "pgrep -c -P 4242 || true": "2\n"})
    fabfile.scale.body(c, web="+1")
    assert "kill -TTIN 4242" in c.commands


def test_scale_workers_rewrites_numprocs_and_updates_the_group(capsys):
    c = Recorder({"JOBLAB_KAFKA_PARTITIONS": "4\n"})
    fabfile.scale.body(c, workers="6")
    assert any("numprocs=4" in cmd for cmd in c.commands)
    assert any(cmd.endswith("update joblab-worker") for cmd in c.commands)
    assert "capped at 4" in capsys.readouterr().out


def test_scale_needs_an_option():
    with pytest.raises(Exit, match="scale needs"):
        fabfile.scale.body(Recorder())


def test_unreachable_host_is_one_line():
    c = Recorder({"test -x": socket.gaierror(-2, "Name or service not known")}, host="nohost")
    with pytest.raises(Exit) as err:
        fabfile.status.body(c)
    assert str(err.value.message) == "fab: nohost: unreachable ([Errno -2] Name or service not known)"


def test_restart_is_graceful_by_default():
    c = Recorder({"test -x": "app\n", "GUNICORN_PIDFILE": "/var/lib/joblab/gunicorn.pid\n",
                  "cat /var/lib/joblab/gunicorn.pid": "77\n"})
    fabfile.restart.body(c)
    assert "nginx -t" in c.commands and "service nginx reload" in c.commands and "kill -HUP 77" in c.commands
    assert not any("KILL" in cmd for cmd in c.commands)


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


def test_rollback_needs_a_previous_release():
    c = Recorder({"ls -1": "20260101000000-0.1.0\n", "readlink /opt/joblab/current": "/opt/joblab/releases/20260101000000-0.1.0\n"})
    with pytest.raises(Exit, match="no previous release"):
        fabfile.rollback.body(c)


def test_switch_remembers_the_release_it_replaces():
    c = Recorder({"readlink /opt/joblab/current": "/opt/joblab/releases/A-0.1.0\n"})
    fablib.releases.switch_current(c, "B-0.1.1")
    links = [cmd for cmd in c.commands if cmd.startswith(("ln -sfn", "mv -T"))]
    assert links == [
        "ln -sfn /opt/joblab/releases/A-0.1.0 /opt/joblab/previous.new", "mv -T /opt/joblab/previous.new /opt/joblab/previous",
        "ln -sfn /opt/joblab/releases/B-0.1.1 /opt/joblab/current.new", "mv -T /opt/joblab/current.new /opt/joblab/current",
    ]


def test_a_failed_build_is_one_line(tmp_path):
    with pytest.raises(Exit, match="building the app from"):
        fabfile.build_wheel(str(tmp_path))
