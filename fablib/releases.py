"""Releases on the app host, through the host's own joblab-release (devops/joblab-release, which
provisioning uses too): /opt/joblab/releases/<stamp>-<version>, `current` and `previous`; and the
graceful code reload (USR2) that makes a release the one served."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from invoke.exceptions import Exit

from .remote import (alive, check_app_process, env_value, gunicorn_master_pid, gunicorn_worker_count, read_pid,
                     restart_job_workers, signal_app_process)

RELEASE_TOOL = "/usr/local/sbin/joblab-release"  # installed by provision/app.sh
KEEP_RELEASES = 5


class DeployError(Exception):
    """A step of a deploy failed; the previous release is restored."""


def build_wheel(source: str) -> str:
    """The app from a working tree, as a wheel in a temp dir (its filename carries the version)."""
    out = tempfile.mkdtemp(prefix="joblab-wheel-")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source],
                         capture_output=True, text=True)
    wheels = [f for f in os.listdir(out) if f.startswith("joblab-") and f.endswith(".whl")]
    if run.returncode != 0 or len(wheels) != 1:
        raise Exit("fab: building the app from %s failed: %s" % (source, (run.stderr.strip().splitlines() or ["?"])[-1]))
    return os.path.join(out, wheels[0])


def wheel_version(path: str) -> str:
    return os.path.basename(path).split("-")[1]


def release_version(name: str) -> str:
    """releases/<stamp>-<version> -> version."""
    return name.split("-", 1)[1] if "-" in name else name


def list_releases(c: Any) -> Tuple[List[str], Optional[str], Optional[str]]:
    """Release names, oldest first, and the ones `current` and `previous` point at."""
    res = c.sudo(RELEASE_TOOL + " list", hide=True, warn=True)
    if not res.ok:
        raise Exit("fab: %s: %s list failed (provision the host: fab provision): %s"
                   % (c.host, RELEASE_TOOL, (res.stderr.strip().splitlines() or ["no output"])[-1]))
    names, current, previous = [], None, None
    for line in res.stdout.splitlines():
        name, *flags = line.split()
        names.append(name)
        if "current" in flags:
            current = name
        if "previous" in flags:
            previous = name
    return names, current, previous


def install_release(c: Any, wheel: str) -> str:
    """Unpack the uploaded ``wheel`` into a new release; its directory on the host."""
    return c.sudo("%s install %s" % (RELEASE_TOOL, wheel), hide=True).stdout.strip().splitlines()[-1]


def remove_release(c: Any, name: str) -> None:
    c.sudo("%s remove %s" % (RELEASE_TOOL, name), hide=True, warn=True)


def prune_releases(c: Any, keep: int) -> None:
    """The newest ``keep`` stay, and always `current` and `previous` (rollback's target)."""
    c.sudo("%s prune %d" % (RELEASE_TOOL, int(keep)), hide=True)


def switch_current(c: Any, name: str, previous: Optional[str] = None) -> None:
    """`current` -> name; `previous` -> what was current (rollback's target), or ``previous``
    ("none": no previous), atomically."""
    c.sudo("%s activate %s%s" % (RELEASE_TOOL, name, " " + previous if previous else ""), hide=True)


def get_info(c: Any, port: int) -> Dict[str, Any]:
    """/v1/info as the host sees it on ``port`` (8000: gunicorn itself, 80: through nginx); {} if none."""
    out = c.run("curl -s -m 3 http://127.0.0.1:%d/v1/info" % port, hide=True, warn=True).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {}


def reload_code(c: Any, version: str, timeout: int = 90) -> None:
    """preload_app is on, so HUP would keep the old code: USR2 starts a new master (it writes
    <pidfile>.2) that imports the release `current` points at; once its workers answer with
    `version`, TERM retires the old master gracefully (its workers finish their requests; the
    listening socket stays open in the new master, so no connection is refused). The new master
    then promotes itself and renames <pidfile>.2 to <pidfile>. Both pidfiles are the app user's to
    write: a pid from them is signalled only once checked (gunicorn_master_pid, check_app_process)
    and only as the app user (signal_app_process)."""
    pidfile = env_value(c, "GUNICORN_PIDFILE")
    old = gunicorn_master_pid(c)
    workers = gunicorn_worker_count(c, old)
    signal_app_process(c, old, "USR2")
    started = time.monotonic()
    new = None
    while True:
        time.sleep(0.5)
        pid = read_pid(c, pidfile + ".2")
        if pid is not None and alive(c, pid):
            new = pid
            info = get_info(c, 8000)
            if info.get("ppid") == new and info.get("version") == version:
                break
        elif time.monotonic() - started > 10 and gunicorn_worker_count(c, old) <= workers:
            # No pidfile.2 and no extra child of the old master: the new one died importing the app.
            raise DeployError("the new gunicorn master exited at start (see fab logs)")
        if time.monotonic() - started > timeout:
            if new is not None and alive(c, new):
                try:
                    signal_app_process(c, check_app_process(c, new, "gunicorn", pidfile + ".2"), "TERM", warn=True)
                except Exit:
                    pass  # not the app user's gunicorn (any more): not ours to stop
            raise DeployError("no gunicorn master serving %s within %d s" % (version, timeout))
    signal_app_process(c, old, "TERM")
    for _ in range(2 * 45):
        time.sleep(0.5)
        if not alive(c, old) and read_pid(c, pidfile) == new:
            return
    raise DeployError("the old gunicorn master %d did not hand over within 45 s" % old)


def check_health(c: Any, version: str, seconds: int = 30) -> None:
    """Through nginx, as clients see it: /readyz 200 and /v1/info reporting ``version``."""
    last = ""
    for _ in range(seconds * 2):
        ready = c.run("curl -s -o /dev/null -w '%{http_code}' -m 3 http://127.0.0.1/readyz", hide=True, warn=True)
        served = get_info(c, 80).get("version")
        if ready.stdout.strip() == "200" and served == version:
            return
        last = "readyz %s, version %s" % (ready.stdout.strip() or "no answer", served)
        time.sleep(0.5)
    raise DeployError("health check failed (%s; wanted %s)" % (last, version))


def activate(c: Any, name: str, previous: Optional[str] = None) -> None:
    """Make release ``name`` the one served: switch, reload gunicorn, restart workers, check."""
    version = release_version(name)
    switch_current(c, name, previous)
    if get_info(c, 8000).get("version") != version:
        reload_code(c, version)
    restart_job_workers(c)
    check_health(c, version)
