"""Deployment facts are written once (lab.yml's `settings`) and every consumer reads the value
fablib/labfile.py resolves (a non-empty LAB_<NAME> wins): no script, task or test re-declares them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from fablib import labfile
from tests.conftest import ROOT

SETTINGS = labfile.load()["settings"]


def tracked(*patterns):
    out = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def test_the_kafka_version_is_written_once():
    version = str(SETTINGS["LAB_KAFKA_VERSION"])
    found = []
    for path in tracked():
        if path.endswith(".md") or path == "lab.yml" or path.endswith(".png"):
            continue
        with open(os.path.join(ROOT, path), errors="replace") as fh:
            found += ["%s:%d" % (path, n) for n, line in enumerate(fh, 1)
                      if re.search(r"(?<![\d.])%s(?![\d.])" % re.escape(version), line)]
    assert found == []


def test_no_consumer_names_the_app_user_itself():
    """The user's name appears as a value in lab.yml only; commands take it from the resolved setting."""
    user = re.escape(str(SETTINGS["LAB_APP_USER"]))
    as_user = re.compile(r"(sudo|runuser|su|pkill|pgrep|ps)\b[^\n]*\s-u\s+'?%s\b|chown\s+%s[:\s]|user=%s\b" % (
        user, user, user))
    found = []
    for path in tracked("*.py", "*.sh", "fabfile.py", "Vagrantfile", "Makefile", "provision/*", "tests/*"):
        with open(os.path.join(ROOT, path), errors="replace") as fh:
            found += ["%s:%d: %s" % (path, n, line.strip()) for n, line in enumerate(fh, 1) if as_user.search(line)]
    assert found == []


def test_every_consumer_reads_the_resolved_app_user():
    env = dict(os.environ, LAB_APP_USER="svc", LAB_KAFKA_VERSION="9.9.9")
    python = subprocess.run([sys.executable, "-c", (
        "from fablib import labfile, remote; from tests.infra import conftest; from tests.drills import targets; "
        "print(labfile.settings()['LAB_APP_USER'], remote.APP_USER, conftest.APP_USER, targets.APP_USER, "
        "labfile.settings()['LAB_KAFKA_VERSION'])")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert python.stdout.split() == ["svc"] * 4 + ["9.9.9"], python.stderr
    shell = subprocess.run(["bash", "-c", "source provision/host/lib.sh && lab_setting LAB_APP_USER"], cwd=ROOT,
                           env=dict(env, LAB_PYTHON=sys.executable), capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip() == "svc", shell.stderr
    # An empty variable counts as unset, everywhere.
    empty = subprocess.run([sys.executable, "-m", "fablib.labfile", "get", "LAB_APP_USER"], cwd=ROOT,
                           env=dict(os.environ, LAB_APP_USER=""), capture_output=True, text=True, timeout=60)
    assert empty.stdout.strip() == str(SETTINGS["LAB_APP_USER"])
