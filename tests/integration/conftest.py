"""Real parts for integration tests, started here: a Kafka broker (provision/kafka-local.sh, the
cached jars, its own port and data dir), a PostgreSQL server (initdb in a temp dir, its own port)
and SQLite files. Each test gets its own topic prefix, consumer group and database."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import tempfile
import subprocess
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import create_engine, text

from app.migrate import upgrade
from app.topics import Topics, ensure_topics
from tests.conftest import ROOT, auth
from worker.main import build_worker

KAFKA_SCRIPT = os.path.join(ROOT, "provision", "kafka-local.sh")


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


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    b = Broker(str(tmp_path_factory.mktemp("kafka")))
    b.start()
    yield b
    b.stop()


class Postgres:
    """A throwaway PostgreSQL cluster from the Debian packages' binaries, on its own port."""

    def __init__(self, base: str) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bindirs:
            raise RuntimeError("PostgreSQL server binaries missing: run provision/host-deps.sh test")
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

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE %s" % name))
        admin.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres():
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    base = tempfile.mkdtemp(prefix="joblab-pg-")
    pg = Postgres(base)
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each test that takes it runs against both stores."""
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "jobs.sqlite3")
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    return url


class Stack:
    """One isolated job stack on the shared broker: app (test client), worker factory, topic reader."""

    def __init__(self, make_app: Callable[..., Any], db_url: str, broker: Broker, **config: Any) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings: Dict[str, Any] = {
            "DATABASE_URL": db_url,
            "KAFKA_BOOTSTRAP": broker.bootstrap,
            "KAFKA_TOPIC_PREFIX": "t%s." % tag,
            "KAFKA_GROUP": "workers-%s" % tag,
            "KAFKA_PARTITIONS": 2,
            "KAFKA_SEND_TIMEOUT": 10.0,
            "MAX_ATTEMPTS": 3,
            "RETRY_BACKOFF": 0.2,
            "RETRY_BACKOFF_MAX": 1.0,
        }
        self.settings.update(config)
        self.topics = Topics.with_prefix(self.settings["KAFKA_TOPIC_PREFIX"])
        ensure_topics(broker.bootstrap, self.topics, self.settings["KAFKA_PARTITIONS"])
        self.app = make_app(db_url, **{k: v for k, v in self.settings.items() if k != "DATABASE_URL"})
        self.client = self.app.test_client()
        self.user = auth(self.app, "alice")
        self.threads: List["WorkerThread"] = []

    @property
    def engine(self):
        return self.app.extensions["joblab_db"].engine

    def env(self) -> Dict[str, str]:
        """Environment for `python -m worker` / gunicorn subprocesses running this stack."""
        env = dict(os.environ)
        env.update({"JOBLAB_" + k: str(v) for k, v in self.settings.items()})
        env["PYTHONPATH"] = ROOT
        return env

    def submit(self, job_type: str, args: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> str:
        resp = self.client.post("/v1/jobs", json={"type": job_type, "args": args}, headers=headers or self.user)
        assert resp.status_code == 202, resp.get_data(as_text=True)
        assert resp.headers["Location"] == "/v1/jobs/" + resp.get_json()["id"]
        return resp.get_json()["id"]

    def job(self, job_id: str) -> Dict[str, Any]:
        return self.client.get("/v1/jobs/" + job_id, headers=self.user).get_json()

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError("job %s still %s after %ss (wanted %s)" % (job_id, job["status"], timeout, statuses))
            time.sleep(0.05)

    def start_worker(self) -> "WorkerThread":
        wt = WorkerThread(build_worker(dict(self.settings)))
        self.threads.append(wt)
        return wt

    def read_topic(self, topic: str) -> List[Any]:
        """Every record now in ``topic`` (all partitions), oldest first per partition."""
        consumer = KafkaConsumer(bootstrap_servers=self.settings["KAFKA_BOOTSTRAP"], enable_auto_commit=False)
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            end = consumer.end_offsets(parts)
            out: List[Any] = []
            deadline = time.monotonic() + 15
            while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    out.extend(records)
            return out
        finally:
            consumer.close()

    def produce_raw(self, topic: str, key: str, value: bytes) -> None:
        self.app.extensions["joblab_queue"].send(topic, key, value)

    def close(self) -> None:
        for wt in self.threads:
            wt.stop()


class WorkerThread:
    """The real Worker, in a thread of the test process (signals are tested with subprocesses)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(max_seconds=120)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self.worker.queue.close()

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(30)
        self.worker.engine.dispose()
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def make_stack(make_app, broker):
    stacks: List[Stack] = []

    def build(db_url: str, **config: Any) -> Stack:
        stack = Stack(make_app, db_url, broker, **config)
        stacks.append(stack)
        return stack

    yield build
    for s in stacks:
        s.close()


@pytest.fixture
def stack(make_stack, db_url):
    return make_stack(db_url)
