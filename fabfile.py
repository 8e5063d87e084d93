"""Fabric tasks for the lab's machines and for any SSH host (a real RHEL server included).

Hosts: `app` and `sidecar` from `vagrant ssh-config` by default (`make lab` writes it to
.vagrant/ssh-config; fabric.yaml points Fabric at it); any host with `fab -H host TASK`.

    fab status                    services, supervisor programs, gunicorn workers, /readyz, lag
    fab logs [--follow] [--lines=N]
    fab restart [--hard]          graceful (nginx reload, gunicorn HUP, workers finish their job)
    fab scale --web=+1|-1|N       TTIN/TTOU on the gunicorn master
    fab scale --workers=N         job worker processes, at most the jobs topic's partitions
    fab provision [--role=app|sidecar]   run provision/*.sh on the host, as on the lab machines

Errors are one line with the cause and exit non-zero (invoke's Exit).
"""
from __future__ import annotations

import functools
import io
import os
import re
import shlex
import socket
import subprocess
import tarfile
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
    pid = c.sudo("%s pid joblab-web" % SUPERVISORCTL, hide=True).stdout.strip()
    if not pid.isdigit() or pid == "0":
        raise Exit("fab: %s: joblab-web is not running (fab status)" % name_of(c))
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
