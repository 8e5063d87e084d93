"""The Fabric tasks for real, against the running lab (hosts from .vagrant/ssh-config)."""
import pytest

from tests.infra.conftest import fab
from tests.infra.load import Load


def test_status_shows_both_hosts_healthy():
    out = fab("status").stdout
    assert "== app (app)" in out and "== sidecar (sidecar)" in out
    assert out.count("running") >= 4 and "NOT running" not in out
    assert "/readyz   HTTP 200" in out and "lag on jobs: 0" in out


def test_scale_web_up_and_down():
    assert "2 -> 3 workers (TTIN x1)" in fab("scale", "--web=+1").stdout
    assert "3 -> 2 workers (TTOU x1)" in fab("scale", "--web=-1").stdout


def test_scale_workers_is_capped_at_the_partitions_then_restored():
    out = fab("scale", "--workers=99").stdout
    assert "capped at 4" in out
    assert "1 job workers" in fab("scale", "--workers=1").stdout


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
