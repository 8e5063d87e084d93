"""Where the drill runs and how it breaks things. Both targets offer the same faults:

    kill_worker()   SIGKILL a job worker (restarted like supervisor would: at once)
    kill_web_worker()  SIGKILL one gunicorn worker, not the master (which starts another), mid-load:
                    a submit it was serving may leave its job committed but never produced
    restart_kafka() restart the broker
    restart_db()    restart the database server
    reload_web()    gunicorn graceful reload (HUP: new workers, old ones finish their requests)
    worker_join() / worker_leave()  a second job worker joins the group, later leaves it (TERM)

LocalTarget runs its own stack (tests/support/stack.py): Kafka, PostgreSQL, gunicorn, workers.
LabTarget drives the running lab (`make lab`) over SSH: supervisor, init.d scripts, the app's env.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Set

from app.config import DEFAULTS
from app.topics import Topics
from fablib.remote import APP_USER, ENV_FILE, SUPERVISORCTL
from tests.support.services import ROOT, WorkerProcess
from tests.support.stack import LocalStack


#: The app machine's logs that carry user text (gunicorn's and the job workers').
APP_LOGS = "/var/log/joblab/*.log"
SUPERVISORD_LOG = "/var/log/supervisor/supervisord.log"
WEB_ERROR_LOG = "/var/log/joblab/web-error.log"
#: supervisord, when a program exited on its own: "exited: joblab-worker-0 (exit status 1; not expected)".
SUPERVISOR_EXIT = re.compile(r"exited: (\S+) \(([^;]+); not expected\)")
#: What a job worker's sweep logs when it sends a job whose message was nowhere (worker/sweep.py).
SWEEP_SENT = "stranded in queued for over"
#: gunicorn's master, when one of its workers died: "Worker (pid:N) exited with code C." / "was sent
#: SIGKILL!" (not SIGTERM: that is how a graceful reload ends the old workers).
GUNICORN_WORKER_DIED = re.compile(r"Worker \(pid:(\d+)\) (exited with code|was sent (?!SIGTERM))")


def web_worker_deaths(lines: Any, killed: Set[int]) -> List[Dict[str, Any]]:
    """gunicorn workers that died, from its log's ``lines``, less those the drill SIGKILLed."""
    out = []
    for line in lines:
        m = GUNICORN_WORKER_DIED.search(line)
        if m and not (int(m.group(1)) in killed and "SIGKILL" in line):
            out.append({"process": "gunicorn worker", "pid": int(m.group(1)), "code": None, "tail": line.strip()})
    return out


class Burst:
    """Submits in flight when a gunicorn worker is SIGKILLed: ``threads`` clients (a token of their
    own, so the ledger's load keeps its rate limit) sending `noop` jobs back to back, so that some
    are cut between their job's INSERT and its produce - the window the workers' sweep closes.
    Their jobs are in no ledger: the drills' `stranded` check covers them (any job still queued
    counts). Bounded: ``seconds`` at most, then each thread's last request."""

    def __init__(self, url: str, token: str, threads: int = 8, seconds: float = 10.0) -> None:
        from tests.drills.client import Client

        self.clients = [Client(url, token, timeout=30) for _ in range(threads)]
        self.stop = threading.Event()
        self.deadline = time.monotonic() + seconds
        self.sent = self.cut = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]

    def _loop(self, client: Any) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            status, _answer = client.submit("noop", {})
            with self._lock:
                self.sent += 1
                # Cut: the connection died under the request (direct), or nginx answered 502 because
                # its upstream (the gunicorn worker) did (the lab).
                self.cut += status in (0, 502)
        client.close()

    def __enter__(self) -> "Burst":
        for t in self.threads:
            t.start()
        while self.sent < len(self.threads) and time.monotonic() < self.deadline:
            time.sleep(0.01)  # a steady stream first, then the kill lands among requests
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.3)  # requests still in flight at the kill finish (or are cut) meanwhile
        self.stop.set()
        for t in self.threads:
            t.join(35)

    def summary(self) -> str:
        return "%d of %d burst submits cut" % (self.cut, self.sent)


def stranded_bound(settings: Dict[str, Any]) -> float:
    """How long a job may stay queued with no message before the sweep has sent it: the
    sweep's age bound, two sweeps (it decides at its second sighting), and room to run it."""
    return float(settings["STRANDED_AFTER"]) + 2 * float(settings["SWEEP_EVERY"]) + 30


def trouble(text: str, lines: int = 15) -> str:
    """What a log says about a death: from its last traceback on (30 lines), else its last lines."""
    at = text.rfind("Traceback (most recent call last)")
    if at >= 0:
        start = text.rfind("\n", 0, at) + 1
        return "\n".join(text[start:].splitlines()[:30]).rstrip()
    return "\n".join(text.splitlines()[-lines:]).rstrip()


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return trouble(fh.read(), lines)
    except OSError as exc:
        return "(no log: %s)" % exc


def exit_record(what: str, w: WorkerProcess) -> Dict[str, Any]:
    assert w.proc is not None
    return {"process": what, "pid": w.pid, "code": w.proc.returncode, "tail": tail(w.log_path)}


class LocalTarget:
    name = "local"

    def __init__(self, work_dir: str) -> None:
        # One supervised worker, as on the lab (LAB_JOB_WORKERS=1); PostgreSQL so that a database
        # restart means something (SQLite has no server to restart).
        # A short stranded-job bound, so the drill can wait for the sweep (the default is minutes).
        self.stack = LocalStack(work_dir, store="postgresql", job_workers=1, STRANDED_AFTER=15.0, SWEEP_EVERY=5.0)
        self.web_kills: Set[int] = set()
        self.supervised: Optional[WorkerProcess] = None
        self.joined: Optional[WorkerProcess] = None
        self.unexpected_exits: List[Dict[str, Any]] = []
        self._watch_stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.stack.start()
        self.supervised = self.stack.workers[0]
        self.url, self.token = self.stack.url, self.stack.token
        self.burst_token = self.new_token("burst")
        self.bootstrap = self.stack.broker.bootstrap
        self.topics = self.stack.topics
        self.partitions = int(self.stack.settings["KAFKA_PARTITIONS"])
        threading.Thread(target=self._supervise, daemon=True, name="supervise").start()

    def _supervise(self) -> None:
        """What supervisor's autorestart does on the lab: a worker that exits is started again,
        and the exit is recorded (the drills fail on it: nothing but the drill may end a worker)."""
        while not self._watch_stop.wait(0.5):
            with self._lock:
                w = self.supervised
                if w is not None and not w.running():
                    self.unexpected_exits.append(exit_record("job worker", w))
                    self.supervised = self.stack.add_worker()
                if self.joined is not None and not self.joined.running():
                    self.unexpected_exits.append(exit_record("joined job worker", self.joined))
                    self.joined = None

    def process_exits(self) -> List[Dict[str, Any]]:
        """Every process that ended without the drill ending it: job workers, the gunicorn master,
        and gunicorn workers (their master logs each such death and starts another)."""
        exits = list(self.unexpected_exits)
        web = self.stack.gunicorn
        if web is not None and web.proc is not None and web.proc.poll() is not None:
            exits.append({"process": "gunicorn master", "pid": web.proc.pid, "code": web.proc.returncode,
                          "tail": tail(web.log_path)})
        if web is not None:
            with open(web.log_path, errors="replace") as fh:
                exits += web_worker_deaths(fh, self.web_kills)
        return exits

    @property
    def stranded_bound(self) -> float:
        return stranded_bound(self.stack.settings)

    @property
    def job_max_seconds(self) -> float:
        return float(self.stack.settings.get("JOB_MAX_SECONDS", DEFAULTS["JOB_MAX_SECONDS"]))

    def sweep_resends(self) -> int:
        """Jobs the workers' sweep sent because their message was nowhere, from the workers' logs."""
        total = 0
        for path in glob.glob(os.path.join(self.stack.work_dir, "worker-*.log")):
            with open(path, errors="replace") as fh:
                total += sum(1 for line in fh if SWEEP_SENT in line)
        return total

    def close(self) -> None:
        self._watch_stop.set()
        self.stack.stop_quietly()

    # -- faults --------------------------------------------------------------------------------
    def kill_worker(self) -> str:
        with self._lock:
            assert self.supervised is not None
            pid = self.supervised.pid
            self.supervised.kill()
            self.supervised = self.stack.add_worker()
        return "SIGKILL worker pid %d, restarted as %d" % (pid, self.supervised.pid)

    def kill_web_worker(self) -> str:
        web = self.stack.gunicorn
        assert web is not None
        with Burst(self.url, self.burst_token) as burst:
            # A worker a recent reload (HUP) retired may be gone by now: the first that is there.
            for pid in sorted(web.worker_pids(), reverse=True):
                try:
                    self.web_kills.add(pid)
                    os.kill(pid, 9)
                    break
                except ProcessLookupError:
                    continue
            else:
                raise RuntimeError("gunicorn has no workers to kill")
        return "SIGKILL gunicorn worker pid %d (its master starts another); %s" % (pid, burst.summary())

    def restart_kafka(self) -> str:
        self.stack.broker.restart()
        return "broker restarted (kafka-local.sh restart)"

    def restart_db(self) -> str:
        assert self.stack.postgres is not None
        self.stack.postgres.restart()
        return "PostgreSQL restarted (pg_ctl restart -m fast)"

    def reload_web(self) -> str:
        assert self.stack.gunicorn is not None
        self.stack.gunicorn.reload()
        return "HUP gunicorn master"

    def worker_join(self) -> str:
        self.joined = self.stack.add_worker()
        return "second worker pid %d joined" % self.joined.pid

    def worker_leave(self) -> str:
        with self._lock:
            joined, self.joined = self.joined, None
        if joined is None:
            raise RuntimeError("the second worker was gone before it was asked to leave")
        code = joined.stop()
        return "second worker left (TERM, exit %s)" % code

    # -- users, processes, logs (the hostile phase) -------------------------------------------
    @property
    def token_cache_seconds(self) -> float:
        return float(self.stack.settings.get("TOKEN_CACHE_SECONDS", DEFAULTS["TOKEN_CACHE_SECONDS"]))

    @property
    def quota(self) -> int:
        return int(self.stack.settings.get("USER_MAX_ACTIVE", DEFAULTS["USER_MAX_ACTIVE"]))

    def new_token(self, name: str) -> str:
        from app.store.users import issue_token

        return self._with_engine(lambda engine: issue_token(engine, name)[1])

    def revoke(self, name: str) -> None:
        from app.store.users import revoke_tokens

        self._with_engine(lambda engine: revoke_tokens(engine, name))

    def worker_pids(self) -> Set[int]:
        with self._lock:
            return {w.pid for w in self.stack.workers if w.running()}

    def forged_log_lines(self, marker: str) -> int:
        """Lines of the stack's logs (gunicorn, workers) that start with ``marker``."""
        count = 0
        for path in glob.glob(os.path.join(self.stack.work_dir, "*.log")):
            with open(path, errors="replace") as fh:
                count += sum(1 for line in fh if line.startswith(marker))
        return count

    # -- the store -----------------------------------------------------------------------------
    def _with_engine(self, use: Any) -> Any:
        from app.store import make_engine

        engine = make_engine(self.stack.settings["DATABASE_URL"])
        try:
            return use(engine)
        finally:
            engine.dispose()

    def audit(self, ids: List[str]) -> Dict[str, Any]:
        from app.store.audit import audit_jobs

        return self._with_engine(lambda engine: audit_jobs(engine, ids))


class LabTarget:
    """The lab brought up by `make lab`: hosts from .vagrant/ssh-config, HTTP through nginx on
    127.0.0.1:$LAB_HTTP_PORT, Kafka at the sidecar's address (reachable from this host)."""

    name = "lab"
    WORKER = "joblab-worker:joblab-worker-0"
    # In the app user's home, written by the app user: /var/log/joblab is root's (supervisord's).
    JOINED_LOG = "/var/lib/joblab/drill-worker.log"

    def __init__(self) -> None:
        self.ssh_config = os.path.join(ROOT, ".vagrant", "ssh-config")
        if not os.path.exists(self.ssh_config):
            raise RuntimeError("no lab: %s missing (run: make lab)" % self.ssh_config)
        port = os.environ.get("LAB_HTTP_PORT") or "8080"  # the Vagrantfile's default forward
        self.url = "http://127.0.0.1:%s" % port
        self.joined_pid: Optional[int] = None
        self.unexpected_exits: List[int] = []

    def ssh(self, host: str, command: str, stdin: Optional[str] = None, timeout: float = 180) -> str:
        res = subprocess.run(["ssh", "-F", self.ssh_config, "-o", "LogLevel=ERROR", host, command],
                             input=stdin, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            last = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError("%s: `%s` failed (exit %d): %s" % (host, command, res.returncode, last))
        return res.stdout

    def app_env(self, name: str) -> str:
        return self.ssh("app", "sudo bash -c %s" % shlex.quote('. %s; echo "$%s"' % (ENV_FILE, name))).strip()

    def new_token(self, name: str) -> str:
        out = subprocess.run([os.path.join(ROOT, "provision", "host", "lab-user.sh"), name],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or "could not create user %s on the lab" % name)
        return out.stdout.strip().splitlines()[-1]

    def revoke(self, name: str) -> None:
        self.ssh("app", "sudo -u %s /usr/local/bin/joblab-exec flask --app app users revoke %s" % (
            APP_USER, shlex.quote(name)))

    def worker_pids(self) -> Set[int]:
        """Pids of supervisor's job workers: a worker that died and was restarted has a new one."""
        out = self.ssh("app", "sudo %s status 'joblab-worker:*' || true" % SUPERVISORCTL)
        return {int(m) for m in re.findall(r"\bpid (\d+),", out)}

    def forged_log_lines(self, marker: str) -> int:
        """Lines of the app's logs (gunicorn, workers) that start with ``marker``."""
        script = "awk -v m=%s 'index($0, m) == 1 {n++} END {print n+0}' %s" % (shlex.quote(marker), APP_LOGS)
        return int(self.ssh("app", "sudo sh -c %s" % shlex.quote(script)).strip() or 0)

    def _lines(self, path: str) -> int:
        return int(self.ssh("app", "sudo sh -c %s" % shlex.quote("cat %s 2>/dev/null | wc -l" % path)).strip() or 0)

    def _new_lines(self, path: str) -> List[str]:
        """Lines ``path`` gained since start()."""
        out = self.ssh("app", "sudo tail -n +%d %s" % (self.marks[path] + 1, shlex.quote(path)))
        return out.splitlines()

    def process_exits(self) -> List[Dict[str, Any]]:
        """Every app process that ended without the drill ending it, since start(): from
        supervisord's log (its programs' unexpected exits, less the drill's own SIGKILLs of the job
        worker) and gunicorn's (its workers' deaths)."""
        exits: List[Dict[str, Any]] = []
        sigkills = 0
        for line in self._new_lines(SUPERVISORD_LOG):
            m = SUPERVISOR_EXIT.search(line)
            if not m:
                continue
            program, how = m.group(1), m.group(2)
            if program.startswith("joblab-worker") and "SIGKILL" in how and sigkills < self.kills:
                sigkills += 1  # one of ours
                continue
            log_file = "/var/log/joblab/%s.log" % program if program.startswith("joblab-worker") else WEB_ERROR_LOG
            exits.append({"process": program, "pid": None, "code": how,
                          "tail": trouble(self.ssh("app", "sudo tail -n 2000 %s || true" % log_file))})
        exits += web_worker_deaths(self._new_lines(WEB_ERROR_LOG), self.web_kills)
        return exits

    @property
    def stranded_bound(self) -> float:
        return stranded_bound({key: self.app_env("JOBLAB_" + key) or DEFAULTS[key]
                               for key in ("STRANDED_AFTER", "SWEEP_EVERY")})

    @property
    def job_max_seconds(self) -> float:
        return float(self.app_env("JOBLAB_JOB_MAX_SECONDS") or DEFAULTS["JOB_MAX_SECONDS"])

    def _sweep_lines(self) -> int:
        script = "cat %s 2>/dev/null | grep -c %s || true" % (APP_LOGS, shlex.quote(SWEEP_SENT))
        return int(self.ssh("app", "sudo sh -c %s" % shlex.quote(script)).strip() or 0)

    def sweep_resends(self) -> int:
        """Jobs the workers' sweep sent since start(), from the workers' logs."""
        return self._sweep_lines() - self.sweep_mark

    def start(self) -> None:
        self.marks = {path: self._lines(path) for path in (SUPERVISORD_LOG, WEB_ERROR_LOG)}
        self.kills = 0
        self.web_kills: Set[int] = set()
        self.token = self.new_token("drill")
        self.burst_token = self.new_token("burst")
        self.sweep_mark = self._sweep_lines()
        self.quota = int(self.app_env("JOBLAB_USER_MAX_ACTIVE") or DEFAULTS["USER_MAX_ACTIVE"])
        self.token_cache_seconds = float(self.app_env("JOBLAB_TOKEN_CACHE_SECONDS") or DEFAULTS["TOKEN_CACHE_SECONDS"])
        self.bootstrap = self.app_env("JOBLAB_KAFKA_BOOTSTRAP")
        self.topics = Topics.with_prefix(self.app_env("JOBLAB_KAFKA_TOPIC_PREFIX"))
        self.partitions = int(self.app_env("JOBLAB_KAFKA_PARTITIONS") or 4)

    def close(self) -> None:
        if self.joined_pid is not None:
            self.worker_leave()

    # -- faults --------------------------------------------------------------------------------
    def _worker_pid(self) -> int:
        pid = self.ssh("app", "sudo %s pid %s" % (SUPERVISORCTL, self.WORKER)).strip()
        if not pid.isdigit() or pid == "0":
            raise RuntimeError("app: %s is not running (%r)" % (self.WORKER, pid))
        return int(pid)

    def kill_worker(self) -> str:
        pid = self._worker_pid()
        self.kills += 1
        self.ssh("app", "sudo kill -KILL %d" % pid)
        # supervisor restarts it (autorestart=true); wait until it has, bounded.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                new = self._worker_pid()
                if new != pid:
                    return "SIGKILL worker pid %d; supervisor restarted it as %d" % (pid, new)
            except RuntimeError:
                pass
            time.sleep(0.5)
        raise RuntimeError("supervisor did not restart %s within 60 s" % self.WORKER)

    def _gunicorn_master(self) -> int:
        # The pidfile is the app user's: read as that user (see reload_web).
        pidfile = self.app_env("GUNICORN_PIDFILE")
        return int(self.ssh("app", "sudo -u %s head -c 32 %s" % (APP_USER, shlex.quote(pidfile))).strip())

    def kill_web_worker(self) -> str:
        master = self._gunicorn_master()
        # The newest worker that is there when the kill comes (one a reload retired may be gone),
        # killed as the app user, never root; the pid it killed is printed.
        script = ('for p in $(ps -o pid= --ppid %d | sort -rn); do sudo -u %s kill -KILL "$p" 2>/dev/null '
                  '&& { echo "$p"; exit 0; }; done; exit 1' % (master, APP_USER))
        with Burst(self.url, self.burst_token) as burst:
            out = self.ssh("app", "bash -c %s || true" % shlex.quote(script)).split()
        if not out or not out[-1].isdigit():
            raise RuntimeError("app: gunicorn master %d has no workers to kill" % master)
        pid = int(out[-1])
        self.web_kills.add(pid)
        return "app: SIGKILL gunicorn worker %d of master %d; %s" % (pid, master, burst.summary())

    def restart_kafka(self) -> str:
        self.ssh("sidecar", "sudo /etc/init.d/kafka restart")
        return "sidecar: /etc/init.d/kafka restart"

    def restart_db(self) -> str:
        self.ssh("sidecar", "sudo /etc/init.d/postgresql restart")
        return "sidecar: /etc/init.d/postgresql restart"

    def reload_web(self) -> str:
        # The pidfile is the app user's: read it and signal as that user, never as root (a planted
        # pid could then only name one of the app user's own processes).
        pid = self._gunicorn_master()
        self.ssh("app", "sudo -u %s kill -HUP %d" % (APP_USER, pid))
        return "app: HUP gunicorn master %d" % pid

    def worker_join(self) -> str:
        # As the app user with the app's env, like supervisor's program; detached from this SSH session.
        # (setsid does not fork here and joblab-exec execs python: $! is the worker's own pid.)
        inner = ("setsid /usr/local/bin/joblab-exec python -m worker --max-seconds 900 </dev/null >>%s 2>&1 & "
                 "echo $!" % self.JOINED_LOG)
        cmd = "sudo -u %s bash -c %s" % (APP_USER, shlex.quote(inner))
        self.joined_pid = int(self.ssh("app", cmd).strip().splitlines()[-1])
        return "app: second worker pid %d joined" % self.joined_pid

    def worker_leave(self) -> str:
        pid, self.joined_pid = self.joined_pid, None
        assert pid is not None
        # One TERM: it finishes its job, commits and leaves the group; wait (bounded) until gone.
        self.ssh("app", "sudo -u %s kill -TERM %d; for i in $(seq 180); do sudo kill -0 %d 2>/dev/null || exit 0; "
                        "sleep 0.5; done; exit 1" % (APP_USER, pid, pid))
        return "app: second worker %d left (TERM)" % pid

    # -- the store -----------------------------------------------------------------------------
    def audit(self, ids: List[str]) -> Dict[str, Any]:
        out = self.ssh("app", "sudo -u %s /usr/local/bin/joblab-exec flask --app app jobs audit" % APP_USER,
                       stdin="\n".join(ids) + "\n")
        return json.loads(out.strip().splitlines()[-1])
