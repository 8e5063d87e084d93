"""The baseline of the pipeline benchmark: Celery with Redis as broker and result backend, the
original project's job stack, with a ``noop`` task equivalent to our ``noop`` job type.

Celery's defaults are kept on purpose, since they are what that stack ran; for durability they
mean: the worker acknowledges a message when it *receives* it, before running it
(``task_acks_late=False``), so a worker that dies mid-task loses the task; the worker prefetches
4 messages per process (``worker_prefetch_multiplier=4``); and Redis, started without a config
file, keeps everything in memory with only periodic RDB snapshots (``appendonly no``, no fsync of
each write), so an enqueued task or a stored result can be lost with Redis. Our stack keeps the
job until its outcome is committed to the store (Kafka offsets are committed after it) — the
comparison is of that more careful pipeline against this one.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 celery -A tests.bench.celery_app worker --pool=solo
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from celery import Celery

from tests.support.services import ROOT, check_running, free_port, terminate, wait_until


def make_app(redis_url: str) -> Celery:
    """A Celery app on ``redis_url`` with the ``noop`` task: the benchmark makes one per Redis it
    starts (its client side), the workers get the module's ``app`` from BENCH_REDIS_URL."""
    celery = Celery("joblab_bench", broker=redis_url, backend=redis_url, set_as_current=False)
    celery.conf.update(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        broker_connection_retry_on_startup=True,  # silences Celery 5's deprecation warning only
        worker_hijack_root_logger=False,
    )
    celery.task(name="noop")(noop)
    return celery


def noop() -> float:
    """Do nothing; return the completion time (epoch seconds) so the client can compute latency."""
    return time.time()


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


class RedisServer:
    """A private redis-server on a free loopback port, its state in ``data_dir``."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc: Optional[subprocess.Popen] = None

    def start(self, seconds: float = 20) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server missing: run provision/host-deps.sh bench")
        os.makedirs(self.data_dir, exist_ok=True)
        with open(os.path.join(self.data_dir, "redis.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
                 "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._answers, seconds, "redis-server on :%d" % self.port)

    def _answers(self) -> bool:
        import redis

        check_running(self.proc, "redis-server", os.path.join(self.data_dir, "redis.log"))
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        terminate(self.proc, 20)


class CeleryWorkers:
    """``count`` single-process Celery workers (``--pool=solo``, like one ``python -m worker``)."""

    def __init__(self, client: Celery, count: int, log_dir: str) -> None:
        self.client = client
        self.env = dict(os.environ, BENCH_REDIS_URL=client.conf.broker_url, PYTHONPATH=ROOT)
        self.count = count
        self.log_dir = log_dir
        self.procs: List[subprocess.Popen] = []

    def start(self, seconds: float = 60) -> None:
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        for i in range(self.count):
            with open(os.path.join(self.log_dir, "celery-worker-%d.log" % (i + 1)), "ab") as log:
                self.procs.append(subprocess.Popen(
                    [celery, "-A", "tests.bench.celery_app", "worker", "--pool=solo", "--concurrency=1",
                     "--loglevel=WARNING", "-n", "bench%d@%%h" % (i + 1)],
                    env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(self._all_answer, seconds, "%d celery workers" % self.count, step=0.5)

    def _all_answer(self) -> bool:
        for p in self.procs:
            check_running(p, "a celery worker", self.log_dir)
        replies: List[Dict] = self.client.control.ping(timeout=1.0)
        return len(replies) >= self.count

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:  # TERM all first: warm shutdowns in parallel
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            terminate(p, 30)
