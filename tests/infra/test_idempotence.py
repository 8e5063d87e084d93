"""Re-provisioning a running lab changes nothing: the host fingerprint (packages, managed files,
sockets, supervisor states, service pids) of every machine of the running lab's topology is identical
before and after `vagrant provision`."""
from __future__ import annotations

import difflib
import os
import shlex
import subprocess

import pytest
import testinfra

from tests.infra.conftest import LAB, ROOT

pytestmark = pytest.mark.reprovision

with open(os.path.join(os.path.dirname(__file__), "fingerprint.sh")) as _fh:
    SCRIPT = _fh.read()


def fingerprint(host) -> str:
    out = host.run("sudo bash -c %s" % shlex.quote(SCRIPT))
    assert out.rc == 0, out.stderr
    return out.stdout


def test_vagrant_provision_changes_nothing(request):
    ssh_config = request.config.option.ssh_config
    hosts = {name: testinfra.get_host("ssh://" + name, ssh_config=ssh_config) for name in LAB["machines"]}
    before = {name: fingerprint(h) for name, h in hosts.items()}
    run = subprocess.run(["vagrant", "provision"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    after = {name: fingerprint(h) for name, h in hosts.items()}
    for name in hosts:
        diff = "\n".join(difflib.unified_diff(before[name].splitlines(), after[name].splitlines(), lineterm=""))
        assert before[name] == after[name], "%s changed on re-provision:\n%s" % (name, diff)
    # Each script said so itself: no "wrote ..." or "installing ..." lines on the second pass.
    changes = [line for line in run.stdout.splitlines() if " wrote " in line or " installing " in line]
    assert changes == [], changes
