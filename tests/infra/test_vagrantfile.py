"""The Vagrantfile is valid for every provider. VirtualBox and libvirt can't run here, so their
provider *usability* check is skipped (--ignore-provider); the machines' config for them
(boxes, networks, synced folders, provisioners) is still built and validated."""
import os
import subprocess

import pytest

from tests.infra.conftest import ROOT


@pytest.mark.parametrize("provider", ["docker", "virtualbox", "libvirt"])
def test_vagrant_validate(provider):
    env = dict(os.environ, LAB_PROVIDER=provider)
    cmd = ["vagrant", "validate"] + ([] if provider == "docker" else ["--ignore-provider"])
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_unknown_provider_is_one_clear_line():
    env = dict(os.environ, LAB_PROVIDER="hyperv9")
    run = subprocess.run(["vagrant", "validate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "LAB_PROVIDER=hyperv9 is not one of" in run.stderr + run.stdout
