"""Talking to a joblab host: one-line errors, what a host is, and the app host's state."""
from __future__ import annotations

import base64
import functools
import os
import re
import shlex
import socket
from typing import Any, Callable, List, Optional, Tuple

from fabric import Connection
from invoke.exceptions import Exit, UnexpectedExit
from paramiko.ssh_exception import AuthenticationException, SSHException

from . import labfile

def _own_connect_kwargs(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """Fabric 3.2 writes each host's IdentityFile into the connect_kwargs dict its connections
    share when a Connection is given none of its own: every later host then offers all earlier
    hosts' keys first, and sshd's MaxAuthTries (6) refuses the 7th machine of the cluster lab. Each
    connection gets its own dict (its key list starting empty: the config's keys still come first)."""
    @functools.wraps(resolve)
    def wrapper(self: Any, connect_kwargs: Any = None) -> Any:
        return resolve(self, connect_kwargs or dict(self.config.connect_kwargs, key_filename=[]))
    return wrapper


Connection.resolve_connect_kwargs = _own_connect_kwargs(Connection.resolve_connect_kwargs)

#: The lab's machines (lab.yml, in the running lab's topology): all of them, and the app ones.
LAB_HOSTS = list(labfile.load()["machines"])
APP_HOSTS = labfile.with_role("app")
ENV_FILE = "/etc/joblab/joblab.env"
SUPERVISORCTL = "supervisorctl -c /etc/supervisord.conf"
LOGS = {
    "app": ["/var/log/nginx/access.log", "/var/log/nginx/error.log", "/var/log/joblab/web-error.log",
            "/var/log/joblab/joblab-worker-*.log", "/var/log/supervisor/supervisord.log"],
    "sidecar": ["/var/log/kafka/server.log", "/var/log/postgresql/postgresql-*-main.log"],
    "kafka": ["/var/log/kafka/server.log"],
    "db": ["/var/log/postgresql/postgresql-*-main.log"],
    "lb": ["/var/log/nginx/access.log", "/var/log/nginx/error.log"],
}


#: The unprivileged user gunicorn and the job workers run as (lab.yml's LAB_APP_USER, resolved by
#: fablib/labfile.py as for the provisioning).
APP_USER = labfile.settings()["LAB_APP_USER"]


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
    """app, sidecar (Kafka and the database), kafka, db or lb, from what is installed there (works
    for any host, not only the lab's)."""
    probe = set(c.run("test -x /etc/init.d/supervisord && echo app; test -x /etc/init.d/kafka && echo kafka; "
                      "{ test -x /etc/init.d/postgresql || test -d /opt/mssql; } && echo db; "
                      "test -x /usr/local/sbin/joblab-lb && echo lb; true", hide=True, warn=True).stdout.split())
    for role, needs in (("app", {"app"}), ("sidecar", {"kafka", "db"}), ("kafka", {"kafka"}), ("db", {"db"}),
                        ("lb", {"lb"})):
        if needs <= probe:
            return role
    raise Exit("fab: %s: no joblab role is provisioned there (fab provision)" % name_of(c))


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


def is_program(argv: List[str], program: str) -> bool:
    """Whether a process's argv runs ``program`` (e.g. gunicorn): as the command or the script an
    interpreter runs (``python .../bin/gunicorn -c ...``), or as the title setproctitle gives it
    (``gunicorn: master [joblab-gunicorn]``). Only the first two words count: an argument that
    merely mentions the program does not make a process that program."""
    for word in argv[:2]:
        if os.path.basename(word) == program or word.startswith(program + ": "):
            return True
    return False


def signal_refusal(pid: int, owner: Optional[str], argv: List[str], app_user: str, program: str) -> Optional[str]:
    """Why root must not signal ``pid`` as the app's ``program`` (None: it may). The pid comes from
    a pidfile the app user can write, so it may name any process: init, a root daemon, a process
    of another user. Only a live process of the app user running that program qualifies."""
    if owner is None or not argv:
        return "no live process %d" % pid
    if owner != app_user:
        return "pid %d belongs to %s, not %s" % (pid, owner, app_user)
    if not is_program(argv, program):
        return "pid %d is not %s: %s" % (pid, program, " ".join(argv)[:80])
    return None


def parse_supervisor_status(text: str) -> List[Tuple[str, str]]:
    """`supervisorctl status` -> [(program, state)]."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
    return out


# -- app-host queries -------------------------------------------------------------------------
def env_value(c: Any, name: str) -> str:
    """A setting of /etc/joblab/joblab.env on the host."""
    return c.sudo("bash -c %s" % shlex.quote('. %s; echo "$%s"' % (ENV_FILE, name)), hide=True).stdout.strip()


def store_extra(c: Any) -> str:
    """``[postgresql]`` or ``[mssql]``: the app's extra for the store the host's
    JOBLAB_DATABASE_URL names (only its scheme is read; the URL holds the password); empty for
    SQLite."""
    script = '. %s; u="${JOBLAB_DATABASE_URL%%%%:*}"; echo "${u%%%%+*}"' % ENV_FILE
    kind = c.sudo("bash -c %s" % shlex.quote(script), hide=True).stdout.strip()
    return "[%s]" % kind if kind in ("postgresql", "mssql") else ""


def read_pid(c: Any, path: str) -> Optional[int]:
    """The pid in a pidfile of the host, or None when missing or empty. gunicorn's pidfiles are in
    the app user's directory: read as that user (a link planted there gives root's reading
    rights to nobody), at most 32 bytes (a link to /dev/zero would never end)."""
    pid = c.sudo("-u %s head -c 32 %s 2>/dev/null || true" % (APP_USER, shlex.quote(path)), hide=True).stdout.strip()
    return int(pid) if pid.isdigit() else None


def alive(c: Any, pid: int) -> bool:
    return c.sudo("kill -0 %d" % pid, hide=True, warn=True).ok


def process_identity(c: Any, pid: int) -> Tuple[Optional[str], List[str]]:
    """(owner, argv) of a process on the host; (None, []) when there is none."""
    # cmdline is NUL-separated and any argument may hold a newline: shipped as base64.
    out = c.run("stat -c %%U /proc/%d && base64 -w0 </proc/%d/cmdline" % (pid, pid), hide=True, warn=True)
    lines = out.stdout.split() if out.ok else []
    if len(lines) != 2:
        return None, []
    try:
        argv = base64.b64decode(lines[1]).decode("utf-8", "replace").split("\0")
    except ValueError:
        return None, []
    return lines[0], [a for a in argv if a]


def check_app_process(c: Any, pid: int, program: str, source: str) -> int:
    """``pid`` if it is a live ``program`` process of the app user, else a one-line Exit saying why
    (``source``: where the pid came from). What fab signals from a pidfile passes here first."""
    refusal = signal_refusal(pid, *process_identity(c, pid), app_user=APP_USER, program=program)
    if refusal:
        raise Exit("fab: %s: refusing to signal the pid in %s: %s" % (name_of(c), source, refusal))
    return pid


def signal_app_process(c: Any, pid: int, sig: str, warn: bool = False) -> Any:
    """kill -SIG as the app user, not root: even a pid reused since it was checked can then only
    be one of the app user's own processes (the kernel refuses any other)."""
    return c.sudo("-u %s kill -%s %d" % (APP_USER, sig, pid), hide=True, warn=warn)


def gunicorn_master_pid(c: Any) -> int:
    """The current master (supervisor's own child is joblab-gunicorn, which follows upgrades),
    checked to be the app user's gunicorn before anyone signals it."""
    pidfile = env_value(c, "GUNICORN_PIDFILE")
    pid = read_pid(c, pidfile)
    if pid is None or not alive(c, pid):
        raise Exit("fab: %s: no gunicorn master is running (fab status)" % name_of(c))
    return check_app_process(c, pid, "gunicorn", pidfile)


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
    res = c.sudo("-u %s /usr/local/bin/joblab-exec python -c %s" % (APP_USER, shlex.quote(script)), hide=True, warn=True)
    return res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else "unknown (%s)" % (
        (res.stderr.strip().splitlines() or ["no answer"])[-1])


def restart_job_workers(c: Any) -> None:
    # One TERM each (supervisorctl restart): a worker finishes its current job before it exits.
    c.sudo("%s restart 'joblab-worker:*'" % SUPERVISORCTL, hide=True)
