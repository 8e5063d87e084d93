"""A whole local job stack for drills, benchmarks and API fuzzing: Kafka + PostgreSQL (or SQLite)
+ gunicorn + job worker processes, each on its own port under one work dir, and a user token.

    with LocalStack(work_dir) as stack:
        stack.url, stack.token, stack.workers[0].kill(), stack.broker.restart() ...
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, List, Optional

from app.migrate import upgrade
from app.store.users import issue_token
from app.store import make_engine
from app.topics import Topics, ensure_topics

from .services import Broker, Gunicorn, Postgres, WorkerProcess, stack_env

#: USER_MAX_ACTIVE for benchmark stacks: one user submits thousands of jobs faster than the
#: workers drain them. The per-submit quota check still runs (its cost is measured); it never refuses.
BENCH_QUOTA = 10 ** 9


def isolated_settings(db_url: str, bootstrap: str, **overrides: Any) -> Dict[str, Any]:
    """JOBLAB_* settings (without the prefix) of one stack on a shared broker: its own topic prefix
    and consumer group, so stacks and tests never see each other's jobs. Both stack helpers use it:
    LocalStack (processes) and the integration tests' in-process Stack."""
    tag = uuid.uuid4().hex[:8]
    settings: Dict[str, Any] = {
        "DATABASE_URL": db_url,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_TOPIC_PREFIX": "t%s." % tag,
        "KAFKA_GROUP": "workers-%s" % tag,
    }
    settings.update(overrides)
    return settings


class LocalStack:
    def __init__(self, work_dir: str, store: str = "postgresql", job_workers: int = 1,
                 worker_class: str = "gevent", web_workers: int = 2, **settings: Any) -> None:
        if store not in ("postgresql", "sqlite"):
            raise ValueError("store must be postgresql or sqlite, not %r" % store)
        self.work_dir = work_dir
        self.store = store
        self.job_workers = job_workers
        self.worker_class = worker_class
        self.web_workers = web_workers
        self.overrides = settings
        self.broker = Broker(os.path.join(work_dir, "kafka"))
        self.postgres: Optional[Postgres] = None
        self.pg_dir: Optional[str] = None
        self.gunicorn: Optional[Gunicorn] = None
        self.workers: List[WorkerProcess] = []
        self.settings: Dict[str, Any] = {}
        self.token = ""
        self._extra_workers = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LocalStack":
        os.makedirs(self.work_dir, exist_ok=True)
        self.broker.start()
        if self.store == "postgresql":
            # Not under work_dir when that is private to root: the server runs as `postgres`.
            self.pg_dir = tempfile.mkdtemp(prefix="joblab-pg-")
            self.postgres = Postgres(self.pg_dir)
            self.postgres.start()
            url = self.postgres.new_database()
        else:
            url = "sqlite:///%s" % os.path.join(self.work_dir, "jobs.sqlite3")
        self.settings = isolated_settings(url, self.broker.bootstrap,
                                          **dict({"KAFKA_PARTITIONS": 4, "LOG_LEVEL": "INFO"}, **self.overrides))
        upgrade(url)
        ensure_topics(self.broker.bootstrap, self.topics, int(self.settings["KAFKA_PARTITIONS"]))
        engine = make_engine(url)
        try:
            _uid, self.token, _created = issue_token(engine, "drill")
        finally:
            engine.dispose()
        self.gunicorn = Gunicorn(self.env(), self.log("gunicorn"), worker_class=self.worker_class,
                                 workers=self.web_workers)
        self.gunicorn.start()
        for _ in range(self.job_workers):
            self.add_worker()
        return self

    def stop(self) -> None:
        for w in self.workers:
            w.stop(seconds=30)
        if self.gunicorn is not None:
            self.gunicorn.stop()
        if self.postgres is not None:
            try:
                self.postgres.stop()
            finally:
                shutil.rmtree(self.pg_dir or "", ignore_errors=True)
        self.broker.stop()

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop_quietly()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop_quietly()

    def stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception as exc:  # teardown must not hide the run's own error
            print("stack: teardown: %s" % exc)

    # -- parts ----------------------------------------------------------------------------------
    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.settings["KAFKA_TOPIC_PREFIX"])

    @property
    def url(self) -> str:
        assert self.gunicorn is not None
        return self.gunicorn.url

    def env(self) -> Dict[str, str]:
        return stack_env(self.settings)

    def log(self, name: str) -> str:
        return os.path.join(self.work_dir, name + ".log")

    def add_worker(self, args: Optional[List[str]] = None) -> WorkerProcess:
        """Start one more job worker process (it joins the consumer group)."""
        self._extra_workers += 1
        w = WorkerProcess(self.env(), self.log("worker-%d" % self._extra_workers), args)
        w.start()
        self.workers.append(w)
        return w
