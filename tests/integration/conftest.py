"""Real parts for integration tests, started here: a Kafka broker (provision/host/kafka-local.sh, the
cached jars, its own port and data dir), a PostgreSQL server (initdb in a temp dir, its own port)
and SQLite files. Each test gets its own topic prefix, consumer group and database."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from app.migrate import upgrade
from app.topics import Topics, ensure_topics
from tests.conftest import auth, mssql_store
from tests.support.services import Broker, Postgres, stack_env
from tests.support.stack import isolated_settings
from worker.main import build_worker

@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    b = Broker(str(tmp_path_factory.mktemp("kafka")))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres():
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    base = tempfile.mkdtemp(prefix="joblab-pg-")
    pg = Postgres(base)
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql", "mssql"])
def db_url(request, tmp_path):
    """Each test that takes it runs against every store: SQLite, PostgreSQL (started here), and SQL
    Server when JOBLAB_TEST_MSSQL_URL names one (else skipped, the reason in the summary)."""
    if request.param == "mssql":
        with mssql_store(request) as url:
            yield url
        return
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "jobs.sqlite3")
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    yield url


class Stack:
    """One isolated job stack on the shared broker: app (test client), worker factory, topic reader."""

    def __init__(self, make_app: Callable[..., Any], db_url: str, broker: Broker, **config: Any) -> None:
        self.settings = isolated_settings(db_url, broker.bootstrap, **dict({
            "KAFKA_PARTITIONS": 2,
            "KAFKA_SEND_TIMEOUT": 10.0,
            "MAX_ATTEMPTS": 3,
            "RETRY_BACKOFF": 0.2,
            "RETRY_BACKOFF_MAX": 1.0,
        }, **config))
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
        return stack_env(self.settings)

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
            for wt in self.threads:
                wt.check_alive()  # a worker that died says so, rather than "still queued" later
            if time.monotonic() > deadline:
                raise AssertionError("job %s still %s after %ss (wanted %s)" % (job_id, job["status"], timeout, statuses))
            time.sleep(0.05)

    def start_worker(self, group: Optional[str] = None) -> "WorkerThread":
        """A worker of the stack's group, or of another ``group`` (which gets every job again)."""
        settings = dict(self.settings)
        if group is not None:
            settings["KAFKA_GROUP"] = group
        wt = WorkerThread(build_worker(settings))
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
            self.worker.run()  # until stop(): no time limit that could end it quietly mid-test
        except BaseException as exc:  # surfaced by check_alive() and stop()
            self.error = exc
        finally:
            self.worker.queue.close()

    def check_alive(self) -> None:
        if not self.thread.is_alive() and not self.worker.stopping:
            raise AssertionError("the worker thread ended by itself: %r" % (self.error,))

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
