"""devops/joblab-release, the one implementation of the app's release layout (provisioning and fab
deploy/rollback both call it), run for real against a scratch root with a real (tiny) wheel."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile

import pytest

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "devops", "joblab-release")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="joblab-release runs as root")


def wheel(tmp_path, version):
    """A minimal valid wheel of a distribution named joblab."""
    path = tmp_path / ("joblab-%s-py3-none-any.whl" % version)
    dist = "joblab-%s.dist-info" % version
    files = {"joblab_probe.py": "VERSION = %r\n" % version,
             dist + "/METADATA": "Metadata-Version: 2.1\nName: joblab\nVersion: %s\n" % version,
             dist + "/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(text)))
    record.append(dist + "/RECORD,,")
    with zipfile.ZipFile(str(path), "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(dist + "/RECORD", "\n".join(record) + "\n")
    return str(path)


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "opt-joblab"

    def run(*args, ok=True):
        env = dict(os.environ, JOBLAB_RELEASES_ROOT=str(root), JOBLAB_ENV_PREFIX=sys.prefix)
        out = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=120, env=env)
        if ok:
            assert out.returncode == 0, out.stderr
        return out

    run.root = root
    return run


def installed(release, tmp_path, version):
    path = release("install", wheel(tmp_path, version)).stdout.strip()
    assert os.path.isfile(os.path.join(path, "site", "joblab_probe.py"))
    time.sleep(1.1)  # release names carry the second they were made
    return os.path.basename(path)


def test_install_activate_list_and_the_previous_link(release, tmp_path):
    a = installed(release, tmp_path, "1.0")
    assert release("list").stdout.split("\n")[0] == a
    release("activate", a)
    b = installed(release, tmp_path, "1.1")
    assert release("activate", b).stdout.strip() == "current: %s (previous: %s)" % (b, a)
    assert release("list").stdout.splitlines() == [a + " previous", b + " current"]
    assert os.readlink(str(release.root / "current")).endswith("/" + b)
    # A rollback is an activate of previous: the two swap.
    release("activate", a)
    assert release("list").stdout.splitlines() == [a + " current", b + " previous"]
    # A deploy that failed puts back current and previous as they were.
    c = installed(release, tmp_path, "1.2")
    release("activate", c)
    release("activate", a, b)
    assert release("list").stdout.splitlines() == [a + " current", b + " previous", c]
    release("remove", c)
    assert not (release.root / "releases" / c).exists()
    # ...also when there was no previous before it.
    release("activate", b, "none")
    assert release("list").stdout.splitlines() == [a, b + " current"]


def test_prune_keeps_the_newest_and_never_current_or_previous(release, tmp_path):
    names = [installed(release, tmp_path, "2.%d" % i) for i in range(4)]
    release("activate", names[0])
    release("activate", names[1])  # previous: names[0]
    out = release("prune", "1").stdout
    assert out.splitlines() == ["removed %s" % names[2]]
    assert [line.split()[0] for line in release("list").stdout.splitlines()] == [names[0], names[1], names[3]]


@pytest.mark.parametrize("args, message", [
    (["activate", "20260101000000-9.9"], "no release 20260101000000-9.9"),
    (["activate", "../../etc"], "'../../etc' is not a release name"),
    (["install", "/etc/passwd"], "/etc/passwd is not a joblab wheel"),
    (["prune", "0"], "prune needs how many to keep"),
])
def test_refusals_are_one_line_and_change_nothing(release, args, message):
    out = release(*args, ok=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("joblab-release: " + message), lines
    assert not (release.root / "current").exists()


def test_current_and_previous_cannot_be_removed(release, tmp_path):
    a = installed(release, tmp_path, "3.0")
    b = installed(release, tmp_path, "3.1")
    release("activate", a)
    release("activate", b)
    assert "is current" in release("remove", b, ok=False).stderr
    assert "is previous" in release("remove", a, ok=False).stderr
