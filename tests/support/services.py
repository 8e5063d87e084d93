"""Processes of a local job stack: a KRaft Kafka broker (provision/host/kafka-local.sh), a throwaway
PostgreSQL cluster (initdb), gunicorn with devops/gunicorn.conf.py and `python -m worker`
processes. Everything binds to 127.0.0.1 on free ports; nothing touches the system services."""
from __future__ import annotations

import glob
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, List, Optional

from sqlalchemy import create_engine, text

from tests.support.httpclient import call

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA_SCRIPT = os.path.join(ROOT, "provision", "host", "kafka-local.sh")
GUNICORN_CONF = os.path.join(ROOT, "devops", "gunicorn.conf.py")
BIN = os.path.dirname(sys.executable)


def free_port(pair: bool = False) -> int:
    """A free loopback port (and the next one, for the broker's controller listener)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class Broker:
    """The session's Kafka broker; tests may stop and start it (readiness with Kafka down)."""

    def __init__(self, data_dir: str) -> None:
        self.port = free_port(pair=True)
        self.bootstrap = "127.0.0.1:%d" % self.port
        self.env = dict(os.environ, KAFKA_PORT=str(self.port), KAFKA_DATA_DIR=data_dir)

    def _run(self, action: str) -> None:
        subprocess.run([KAFKA_SCRIPT, action], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def restart(self) -> None:
        """Clean stop + start (the broker answers again when this returns)."""
        self._run("restart")


class Postgres:
    """A throwaway PostgreSQL cluster from the Debian packages' binaries, on its own port."""

    def __init__(self, base: str) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bindirs:
            raise RuntimeError("PostgreSQL server binaries missing: run provision/host/host-deps.sh test")
        self.bindir = bindirs[-1]
        self.base = base
        self.data = os.path.join(base, "data")
        self.port = free_port()
        # initdb refuses to run as root: run the server as the `postgres` system user then.
        self.as_user: List[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = "postgresql+psycopg://joblab@127.0.0.1:%d/postgres" % self.port

    def _run(self, *cmd: str) -> None:
        subprocess.run(self.as_user + [os.path.join(self.bindir, cmd[0]), *cmd[1:]], check=True,
                       stdout=subprocess.DEVNULL, cwd=self.base)

    def start(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "joblab", "-A", "trust", "--no-sync", "-E", "UTF8")
        opts = "-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off -c full_page_writes=off" % (
            self.port, self.base)
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.base, "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Fast restart: open connections are cut, the server answers again when this returns."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "restart")

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE %s" % name))
        admin.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name


def http_ok(port: int, path: str = "/healthz", timeout: float = 2.0) -> bool:
    """True when 127.0.0.1:``port`` answers ``path`` with 200."""
    try:
        return call("http://127.0.0.1:%d" % port, "GET", path, timeout=timeout)[0] == 200
    except OSError:
        return False


def wait_until(check, seconds: float, what: str, step: float = 0.1) -> None:
    """Poll ``check()`` until true; RuntimeError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("%s: not ready after %.0f s" % (what, seconds))
        time.sleep(step)


def check_running(proc: Optional[subprocess.Popen], what: str, log: str) -> bool:
    """True while ``proc`` runs; once it has exited, RuntimeError naming ``what`` and its ``log``
    (a readiness wait then fails at once instead of running into its timeout)."""
    if proc is None or proc.poll() is not None:
        raise RuntimeError("%s exited with %s; see %s" % (what, None if proc is None else proc.returncode, log))
    return True


def terminate(proc: Optional[subprocess.Popen], seconds: float) -> Optional[int]:
    """TERM, wait up to ``seconds``, then SIGKILL the process's group (every process started here
    has its own session). Returns the exit status (None if it was never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def stack_env(settings: Dict[str, object], **extra: str) -> Dict[str, str]:
    """The environment of gunicorn / worker processes for JOBLAB_* ``settings``."""
    env = dict(os.environ)
    env.update({"JOBLAB_" + k: str(v) for k, v in settings.items()})
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


class Gunicorn:
    """gunicorn with the project's config file on 127.0.0.1:``port``; its log goes to ``log_path``."""

    def __init__(self, env: Dict[str, str], log_path: str, worker_class: str = "gevent",
                 workers: int = 2, port: Optional[int] = None, app: Optional[str] = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.app = [app] if app else []  # another WSGI app than the config's (the benchmark's Celery front)
        self.env = dict(env, PORT=str(self.port), GUNICORN_WORKER_CLASS=worker_class,
                        GUNICORN_WORKERS=str(workers), GUNICORN_ACCESSLOG=env.get("GUNICORN_ACCESSLOG", "off"))
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self, seconds: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([os.path.join(BIN, "gunicorn"), "-c", GUNICORN_CONF, *self.app], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        wait_until(lambda: check_running(self.proc, "gunicorn", self.log_path) and http_ok(self.port), seconds,
                   "gunicorn on :%d" % self.port)

    def reload(self) -> None:
        """HUP: new workers from the master, old ones finish their requests (graceful)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def worker_pids(self) -> List[int]:
        """The master's children: its workers (Linux's /proc)."""
        assert self.proc is not None
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        try:
            with open(path) as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def stop(self) -> None:
        terminate(self.proc, 40)


class WorkerProcess:
    """One `python -m worker` process (own session, so signals reach only it)."""

    def __init__(self, env: Dict[str, str], log_path: str, args: Optional[List[str]] = None) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args or []
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "worker", *self.args], env=self.env, cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no commit, no leaving the group; the job in hand is redelivered."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, seconds: float = 90) -> Optional[int]:
        """One TERM (finish the job, commit, leave the group); SIGKILL after ``seconds``."""
        return terminate(self.proc, seconds)
