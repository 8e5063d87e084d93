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


def test_no_script_gives_a_setting_a_default_of_its_own():
    """Provisioning receives lab.yml's resolved settings and checks them (need_settings); a `${LAB_X:-...}`
    of its own would silently disagree with lab.yml when a caller forgets one."""
    names = "|".join(re.escape(n) for n in SETTINGS)
    defaulted = re.compile(r"\$\{(%s)(:?[-=])(?!\})" % names)  # ${X:-} (empty) is no default
    found = []
    for path in tracked("provision/*", "dockerfile/*", "devops/*"):
        with open(os.path.join(ROOT, path), errors="replace") as fh:
            found += ["%s:%d: %s" % (path, n, line.strip()) for n, line in enumerate(fh, 1) if defaulted.search(line)]
    assert found == []


def test_a_missing_setting_stops_provisioning_with_one_line():
    run = subprocess.run(["bash", os.path.join(ROOT, "provision", "supervisor.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("LAB_")})
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "[supervisor] error: settings not given: LAB_ENV_NAME LAB_APP_USER LAB_JOB_WORKERS "
        "(provisioning gets lab.yml's resolved settings from vagrant provision or fab provision)"]
