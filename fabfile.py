"""Fabric tasks for the lab's machines and for any SSH host (a real RHEL server included).

Hosts: `app` and `sidecar` from `vagrant ssh-config` by default (`make lab` writes it to
.vagrant/ssh-config; fabric.yaml points Fabric at it); any host with `fab -H host TASK`.

    fab status                    services, supervisor programs, gunicorn workers, /readyz, lag
    fab logs [--follow] [--lines=N]
    fab restart [--hard]          graceful (nginx reload, gunicorn HUP, workers finish their job)
    fab scale --web=+1|-1|N       TTIN/TTOU on the gunicorn master
    fab scale --workers=N         job worker processes, at most the jobs topic's partitions
    fab deploy [--source=DIR]     build, upload, migrate, switch `current`, USR2 reload, health check
    fab rollback                  back to the previous release, same graceful path
    fab provision [--role=app|sidecar]   run provision/*.sh on the host, as on the lab machines

Errors are one line with the cause and exit non-zero (invoke's Exit).
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml
from fabric import task
from invoke.exceptions import Exit, UnexpectedExit
from paramiko.ssh_exception import AuthenticationException, SSHException

ROOT = os.path.dirname(os.path.abspath(__file__))
LAB_HOSTS = ["app", "sidecar"]
ENV_FILE = "/etc/joblab/joblab.env"
SUPERVISORCTL = "supervisorctl -c /etc/supervisord.conf"
LOGS = {
    "app": ["/var/log/nginx/access.log", "/var/log/nginx/error.log", "/var/log/joblab/web-error.log",
            "/var/log/joblab/joblab-worker-*.log", "/var/log/supervisor/supervisord.log"],
    "sidecar": ["/var/log/kafka/server.log", "/var/log/postgresql/postgresql-*-main.log"],
}


def lab_settings() -> Dict[str, Any]:
    with open(os.path.join(ROOT, "lab.yml")) as fh:
        return yaml.safe_load(fh)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SSH and remote-command failures into one line naming the host and the cause."""

    @functools.wraps(func)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        host = name_of(c) if hasattr(c, "host") else "?"
        try:
            return func(c, *args, **kwargs)
        except Exit:
            raise
        except (socket.error, socket.timeout, SSHException) as exc:
            kind = "authentication failed" if isinstance(exc, AuthenticationException) else "unreachable"
            raise Exit("fab: %s: %s (%s)" % (host, kind, exc), code=2) from None
        except UnexpectedExit as exc:
            res = exc.result
            first = (res.stderr or res.stdout or "").strip().splitlines()[-1:] or ["no output"]
            if "a password is required" in first[0] or "no tty present" in first[0]:
                raise Exit("fab: %s: sudo needs a password (use --prompt-for-sudo-password)" % host, code=2)
            raise Exit("fab: %s: `%s` failed (exit %s): %s" % (host, res.command, res.exited, first[0]),
                       code=1) from None

    return wrapper


def role_of(c: Any) -> str:
    """app or sidecar, from what is installed there (works for any host, not only the lab's)."""
    probe = c.run("test -x /etc/init.d/supervisord && echo app; test -x /etc/init.d/kafka && echo sidecar; true",
                  hide=True, warn=True).stdout.split()
    if not probe:
        raise Exit("fab: %s: neither joblab app nor sidecar is provisioned there (fab provision)" % name_of(c))
    return probe[0]


# -- pure helpers (unit-tested) -------------------------------------------------------------
def web_scale_signals(spec: str, current: int) -> Tuple[str, int]:
    """`--web` spec (+N, -N or N) -> (signal, how many times) for the gunicorn master."""
    m = re.fullmatch(r"([+-]?)(\d+)", spec.strip())
    if not m:
        raise Exit("fab: --web takes +N, -N or N, not %r" % spec)
    sign, n = m.group(1), int(m.group(2))
    target = current + n if sign == "+" else current - n if sign == "-" else n
    if target < 1:
        raise Exit("fab: --web would leave %d gunicorn workers; at least 1 is needed" % target)
    delta = target - current
    return ("TTIN" if delta > 0 else "TTOU"), abs(delta)


def capped_workers(wanted: int, partitions: int) -> Tuple[int, bool]:
    """More job workers than partitions would idle: cap at the partition count."""
    if wanted < 1:
        raise Exit("fab: --workers must be at least 1")
    return (partitions, True) if wanted > partitions else (wanted, False)


def parse_supervisor_status(text: str) -> List[Tuple[str, str]]:
    """`supervisorctl status` -> [(program, state)]."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
    return out


# -- app-host queries -------------------------------------------------------------------------
def gunicorn_master_pid(c: Any) -> int:
    """The current master (supervisor's own child is joblab-gunicorn, which follows upgrades)."""
    pid = c.sudo("bash -c %s" % shlex.quote('. %s; cat "$GUNICORN_PIDFILE" 2>/dev/null; true' % ENV_FILE),
                 hide=True).stdout.strip()
    if not pid.isdigit() or not c.run("kill -0 %s 2>/dev/null || sudo -n kill -0 %s" % (pid, pid),
                                      hide=True, warn=True).ok:
        raise Exit("fab: %s: no gunicorn master is running (fab status)" % name_of(c))
    return int(pid)


def gunicorn_worker_count(c: Any, master: int) -> int:
    return int(c.run("pgrep -c -P %d || true" % master, hide=True).stdout.strip() or 0)


def wait_for_worker_count(c: Any, master: int, target: int, seconds: int = 30) -> int:
    """TTIN/TTOU act asynchronously (a TTOU'd worker first finishes its requests): wait, bounded."""
    script = ("for i in $(seq %d); do n=$(pgrep -c -P %d || true); [ \"$n\" = %d ] && break; sleep 0.5; done; "
              "pgrep -c -P %d || true") % (seconds * 2, master, target, master)
    return int(c.run("bash -c %s" % shlex.quote(script), hide=True).stdout.strip() or 0)


def http_get(c: Any, path: str) -> str:
    body = c.run("curl -s -m 5 -w '\\n%%{http_code}' http://127.0.0.1%s" % path, hide=True, warn=True).stdout
    text, _, code = body.strip().rpartition("\n")
    return "HTTP %s %s" % (code, text.strip())


def name_of(c: Any) -> str:
    """The host as the user named it (`app`), not what ssh_config resolved it to (127.0.0.1)."""
    return getattr(c, "original_host", None) or c.host


def consumer_lag(c: Any) -> str:
    """Messages of the jobs topic not yet committed by group `workers`, asked with the app's env."""
    script = (
        "import os; from kafka import KafkaConsumer; from kafka.structs import TopicPartition as T;"
        "p=os.environ.get('JOBLAB_KAFKA_TOPIC_PREFIX','');g=os.environ.get('JOBLAB_KAFKA_GROUP','workers');"
        "c=KafkaConsumer(bootstrap_servers=os.environ['JOBLAB_KAFKA_BOOTSTRAP'].split(','),group_id=g,"
        "enable_auto_commit=False);ps=[T(p+'jobs',i) for i in sorted(c.partitions_for_topic(p+'jobs') or [])];"
        "e=c.end_offsets(ps);print(sum(e[t]-(c.committed(t) or 0) for t in ps));c.close(autocommit=False)"
    )
    res = c.sudo("-u joblab /usr/local/bin/joblab-exec python -c %s" % shlex.quote(script), hide=True, warn=True)
    return res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else "unknown (%s)" % (
        (res.stderr.strip().splitlines() or ["no answer"])[-1])


# -- tasks ------------------------------------------------------------------------------------
@task(hosts=LAB_HOSTS)
@one_line_errors
def status(c):
    """One screen per host: services, supervisor programs, gunicorn workers, version, readiness, lag."""
    role = role_of(c)
    print("== %s (%s)" % (name_of(c), role))
    services = ["nginx", "supervisord"] if role == "app" else ["kafka", "postgresql"]
    for name in services:
        res = c.sudo("service %s status" % name, hide=True, warn=True)
        print("  service %-12s %s" % (name, "running" if res.ok else "NOT running (exit %d)" % res.exited))
    if role != "app":
        for port in (9092, 5432):
            ok = c.run("timeout 3 bash -c '</dev/tcp/127.0.0.1/%d'" % port, hide=True, warn=True).ok
            print("  port %-5d %s" % (port, "listening" if ok else "CLOSED"))
        return
    programs = parse_supervisor_status(c.sudo(SUPERVISORCTL + " status", hide=True, warn=True).stdout)
    for name, state in programs:
        print("  program %-28s %s" % (name, state))
    master = gunicorn_master_pid(c)
    print("  gunicorn master %d, %d workers" % (master, gunicorn_worker_count(c, master)))
    print("  /v1/info  %s" % http_get(c, "/v1/info"))
    print("  /readyz   %s" % http_get(c, "/readyz"))
    print("  consumer group workers, lag on jobs: %s" % consumer_lag(c))


@task(hosts=LAB_HOSTS)
@one_line_errors
def logs(c, follow=False, lines=50):
    """Tail nginx, gunicorn, worker and supervisord logs (app) or Kafka and PostgreSQL (sidecar)."""
    files = " ".join(LOGS[role_of(c)])
    c.sudo("bash -c %s" % shlex.quote("tail -n %d %s %s 2>/dev/null" % (int(lines), "-F" if follow else "", files)),
           warn=not follow, pty=follow)


@task(hosts=["app"])
@one_line_errors
def restart(c, hard=False):
    """Graceful: nginx reload, gunicorn HUP, job workers finish their job. --hard: the seed's way."""
    if role_of(c) != "app":
        raise Exit("fab: %s: restart is for the app host" % name_of(c))
    if hard:
        # The seed's kill-everything: stop all, kill stragglers, start services afresh.
        c.sudo("service supervisord stop", warn=True, hide=True)
        c.sudo("pkill -KILL -f 'gunicorn|python -m worker'", warn=True, hide=True)
        c.sudo("service supervisord start", hide=True)
        c.sudo("service nginx restart", hide=True)
        print("%s: hard restart done" % name_of(c))
        return
    c.sudo("nginx -t", hide=True)
    c.sudo("service nginx reload", hide=True)
    # HUP: new workers from the (preloaded) master; in-flight requests finish on the old ones.
    c.sudo("kill -HUP %d" % gunicorn_master_pid(c), hide=True)
    # One TERM each (supervisorctl restart): a worker finishes its current job before it exits.
    c.sudo("%s restart 'joblab-worker:*'" % SUPERVISORCTL, hide=True)
    print("%s: nginx reloaded, gunicorn workers re-forked, job workers restarted" % name_of(c))


@task(hosts=["app"], optional=["web", "workers"])
@one_line_errors
def scale(c, web=None, workers=None):
    """--web=+1|-1|N: gunicorn workers (TTIN/TTOU on the master); --workers=N: job workers."""
    if web is None and workers is None:
        raise Exit("fab: scale needs --web=+1|-1|N and/or --workers=N")
    if web is not None:
        master = gunicorn_master_pid(c)
        current = gunicorn_worker_count(c, master)
        sig, times = web_scale_signals(str(web), current)
        target = current + (times if sig == "TTIN" else -times)
        for _ in range(times):
            c.sudo("kill -%s %d" % (sig, master), hide=True)
        now = wait_for_worker_count(c, master, target)
        if now != target:
            raise Exit("fab: %s: gunicorn has %d workers, not %d, after 30 s" % (name_of(c), now, target))
        print("%s: gunicorn %d -> %d workers (%s x%d)" % (name_of(c), current, now, sig, times))
    if workers is not None:
        partitions = int(c.sudo("bash -c '. %s; echo ${JOBLAB_KAFKA_PARTITIONS:-4}'" % ENV_FILE,
                                hide=True).stdout.strip())
        n, capped = capped_workers(int(workers), partitions)
        if capped:
            print("%s: --workers=%s capped at %d: the jobs topic has %d partitions" % (name_of(c), workers, n, partitions))
        ini = "/etc/supervisord.d/joblab-worker.ini"
        c.sudo("sed -i 's/^numprocs=.*/numprocs=%d/' %s" % (n, ini), hide=True)
        # reread + update replaces the process group; each old worker finishes its job first.
        c.sudo("%s reread" % SUPERVISORCTL, hide=True)
        c.sudo("%s update joblab-worker" % SUPERVISORCTL, hide=True)
        print("%s: %d job workers (provisioning sets LAB_JOB_WORKERS again on the next run)" % (name_of(c), n))


# -- deploy / rollback -------------------------------------------------------------------------
RELEASES_ROOT = "/opt/joblab"
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


def env_value(c: Any, name: str) -> str:
    return c.sudo("bash -c %s" % shlex.quote('. %s; echo "$%s"' % (ENV_FILE, name)), hide=True).stdout.strip()


def list_releases(c: Any) -> Tuple[List[str], Optional[str]]:
    """Release names, oldest first, and the one `current` points at."""
    names = c.run("ls -1 %s/releases 2>/dev/null || true" % RELEASES_ROOT, hide=True).stdout.split()
    return sorted(names), link_target(c, "current")


def link_target(c: Any, link: str) -> Optional[str]:
    """The release a link under /opt/joblab (`current`, `previous`) points at, or None."""
    target = c.run("readlink %s/%s || true" % (RELEASES_ROOT, link), hide=True).stdout.strip()
    return os.path.basename(target) if target else None


def set_link(c: Any, link: str, name: str) -> None:
    """Atomic: a new symlink renamed over the old one (readers see the old or the new, never none)."""
    c.sudo("ln -sfn %s/releases/%s %s/%s.new" % (RELEASES_ROOT, name, RELEASES_ROOT, link), hide=True)
    c.sudo("mv -T %s/%s.new %s/%s" % (RELEASES_ROOT, link, RELEASES_ROOT, link), hide=True)


def switch_current(c: Any, name: str) -> None:
    """`current` -> name; `previous` -> what was current (rollback's target)."""
    current = link_target(c, "current")
    if current and current != name:
        set_link(c, "previous", current)
    set_link(c, "current", name)


def info_direct(c: Any) -> Dict[str, Any]:
    """/v1/info straight from gunicorn (not nginx): which version and which master answered."""
    out = c.run("curl -s -m 3 http://127.0.0.1:8000/v1/info", hide=True, warn=True).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {}


def alive(c: Any, pid: int) -> bool:
    return c.sudo("kill -0 %d" % pid, hide=True, warn=True).ok


def reload_code(c: Any, version: str, timeout: int = 90) -> None:
    """preload_app is on, so HUP would keep the old code: USR2 starts a new master (it writes
    <pidfile>.2) that imports the release `current` points at; once its workers answer with
    `version`, TERM retires the old master gracefully (its workers finish their requests; the
    listening socket stays open in the new master, so no connection is refused). The new master
    then promotes itself and renames <pidfile>.2 to <pidfile>."""
    pidfile = env_value(c, "GUNICORN_PIDFILE")
    old = gunicorn_master_pid(c)
    workers = gunicorn_worker_count(c, old)
    c.sudo("kill -USR2 %d" % old, hide=True)
    started = time.monotonic()
    new = None
    while True:
        time.sleep(0.5)
        pid = c.sudo("cat %s.2 2>/dev/null || true" % pidfile, hide=True).stdout.strip()
        if pid.isdigit() and alive(c, int(pid)):
            new = int(pid)
            info = info_direct(c)
            if info.get("ppid") == new and info.get("version") == version:
                break
        elif time.monotonic() - started > 10 and gunicorn_worker_count(c, old) <= workers:
            # No pidfile.2 and no extra child of the old master: the new one died importing the app.
            raise DeployError("the new gunicorn master exited at start (see fab logs)")
        if time.monotonic() - started > timeout:
            if new is not None and alive(c, new):
                c.sudo("kill -TERM %d" % new, hide=True, warn=True)
            raise DeployError("no gunicorn master serving %s within %d s" % (version, timeout))
    c.sudo("kill -TERM %d" % old, hide=True)
    for _ in range(2 * 45):
        time.sleep(0.5)
        if not alive(c, old) and c.sudo("cat %s 2>/dev/null || true" % pidfile, hide=True).stdout.strip() == str(new):
            return
    raise DeployError("the old gunicorn master %d did not hand over within 45 s" % old)


def restart_job_workers(c: Any) -> None:
    # One TERM each: a worker finishes its current job, then starts again on the new release.
    c.sudo("%s restart 'joblab-worker:*'" % SUPERVISORCTL, hide=True)


def check_health(c: Any, version: str, seconds: int = 30) -> None:
    """Through nginx, as clients see it: /readyz 200 and /v1/info reporting ``version``."""
    last = ""
    for _ in range(seconds * 2):
        ready = c.run("curl -s -o /dev/null -w '%{http_code}' -m 3 http://127.0.0.1/readyz", hide=True, warn=True)
        info = c.run("curl -s -m 3 http://127.0.0.1/v1/info", hide=True, warn=True).stdout
        served = (json.loads(info) if info.strip().startswith("{") else {}).get("version")
        if ready.stdout.strip() == "200" and served == version:
            return
        last = "readyz %s, version %s" % (ready.stdout.strip() or "no answer", served)
        time.sleep(0.5)
    raise DeployError("health check failed (%s; wanted %s)" % (last, version))


def activate(c: Any, name: str) -> None:
    """Make release ``name`` the one served: switch, reload gunicorn, restart workers, check."""
    version = release_version(name)
    switch_current(c, name)
    if info_direct(c).get("version") != version:
        reload_code(c, version)
    restart_job_workers(c)
    check_health(c, version)


@task(hosts=["app"], optional=["source"])
@one_line_errors
def deploy(c, source=ROOT, keep=KEEP_RELEASES):
    """Build the app from a working tree (--source, default this one), install it as a new release,
    migrate, switch `current`, reload gracefully; on failure restore the previous release."""
    started = time.monotonic()
    wheel = build_wheel(source)
    version = wheel_version(wheel)
    names, previous = list_releases(c)
    if previous is None:
        raise Exit("fab: %s: no current release (provision the host first: fab provision)" % name_of(c))
    name = "%s-%s" % (time.strftime("%Y%m%d%H%M%S", time.gmtime()), version)
    rel = "%s/releases/%s" % (RELEASES_ROOT, name)
    pip = "%s/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore" % (
        env_value(c, "JOBLAB_ENV_PREFIX"))
    remote_wheel = "/var/tmp/" + os.path.basename(wheel)
    c.put(wheel, remote_wheel)
    try:
        c.sudo("%s --no-deps --target %s/site %s" % (pip, rel, remote_wheel), hide=True)
        c.sudo("%s --prefer-binary %s" % (pip, remote_wheel), hide=True)  # the release's dependencies
        # Migrations run with the new code before anything serves it (they must suit both versions);
        # they import the app, so a release that cannot even import stops here.
        c.sudo("-u joblab env JOBLAB_RELEASE_SITE=%s/site /usr/local/bin/joblab-exec flask --app app db upgrade"
               % rel, hide=True)
    except UnexpectedExit as exc:
        c.sudo("rm -rf %s" % rel, hide=True, warn=True)
        last = ((exc.result.stderr or exc.result.stdout).strip().splitlines() or ["no output"])[-1]
        raise Exit("fab: %s: deploy of %s failed before the switch: %s; still serving %s"
                   % (name_of(c), version, last, previous))
    before_previous = link_target(c, "previous")
    try:
        activate(c, name)
    except (DeployError, UnexpectedExit) as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, DeployError) else "`%s` failed" % exc.result.command
        activate(c, previous)
        if before_previous:
            set_link(c, "previous", before_previous)
        c.sudo("rm -rf %s" % rel, hide=True, warn=True)
        raise Exit("fab: %s: deploy of %s failed: %s; rolled back to %s" % (name_of(c), version, reason, previous))
    # Keep the newest `keep` releases, and always the one just replaced (rollback's target).
    for old in sorted(names + [name])[: -int(keep)]:
        if old not in (name, previous):
            c.sudo("rm -rf %s/releases/%s" % (RELEASES_ROOT, old), hide=True)
    print("%s: deployed %s (release %s) in %.0f s" % (name_of(c), version, name, time.monotonic() - started))


@task(hosts=["app"])
@one_line_errors
def rollback(c):
    """Serve the release that was current before the last deploy (or rollback) again."""
    names, current = list_releases(c)
    target = link_target(c, "previous")
    if target is None or target not in names or target == current:
        raise Exit("fab: %s: no previous release to roll back to (current: %s)" % (name_of(c), current))
    try:
        activate(c, target)
    except DeployError as exc:
        activate(c, current)
        raise Exit("fab: %s: rollback to %s failed: %s; still on %s" % (name_of(c), target, exc, current))
    print("%s: rolled back from %s to %s" % (name_of(c), current, target))


def _source_tarball(role: str) -> bytes:
    """The committed tree (git archive HEAD) plus the artifacts this role needs, as a tar.gz."""
    tree = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        with tarfile.open(fileobj=io.BytesIO(tree)) as src:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        cache = os.path.join(ROOT, ".cache", "artifacts")
        wanted = ["ca-certificates"] + (["app", "miniconda"] if role == "app" else ["kafka-3.9.1"])
        for name in wanted:
            path = os.path.join(cache, name)
            if os.path.exists(path):
                tar.add(path, arcname=os.path.join(".cache", "artifacts", name))
    return out.getvalue()


@task(optional=["role"])
@one_line_errors
def provision(c, role=None):
    """Run the provision/*.sh scripts of a role (lab.yml order) on any SSH host, as root via sudo."""
    lab = lab_settings()
    role = role or (name_of(c) if name_of(c) in lab["machines"] else None)
    if role not in lab["machines"]:
        raise Exit("fab: provision needs --role=app|sidecar for host %s" % name_of(c))
    env = {k: str(os.environ.get(k, v)) for k, v in lab["settings"].items()}
    # The machines' addresses: LAB_*_HOST for any host, else the lab's (same overrides as the Vagrantfile).
    for machine in ("sidecar", "app"):
        up = machine.upper()
        env["LAB_%s_HOST" % up] = (os.environ.get("LAB_%s_HOST" % up) or os.environ.get("LAB_%s_IP" % up)
                                   or lab["machines"][machine]["ip"])
    if c.run("test -f /vagrant/provision/lib/common.sh", hide=True, warn=True).ok:
        remote = "/vagrant"  # a lab machine: the repository is already there (and the handoff dir)
    else:
        # Any other host: ship the committed tree and the role's artifacts. Separate hosts share no
        # folder: copy the sidecar's /etc/joblab/secrets/db-password to the app's LAB_HANDOFF first.
        remote = "/var/tmp/joblab-provision"
        env.update(LAB_HANDOFF="/etc/joblab/handoff")
        c.put(io.BytesIO(_source_tarball(role)), remote + ".tar.gz")
        c.sudo("bash -c %s" % shlex.quote("rm -rf %s && mkdir -p %s && tar -xzf %s.tar.gz -C %s"
                                          % (remote, remote, remote, remote)), hide=True)
    env.update(LAB_ROOT=remote)
    assignments = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items()))
    for script in lab["machines"][role]["provision"]:
        print("%s: provision/%s.sh" % (name_of(c), script))
        res = c.sudo("env %s bash %s/provision/%s.sh" % (assignments, remote, script), warn=True)
        if not res.ok:
            last = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
            raise Exit("fab: %s: provision/%s.sh failed (exit %d): %s" % (name_of(c), script, res.exited, last))
    print("%s: provisioned as %s" % (name_of(c), role))
