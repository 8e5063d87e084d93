"""The baseline of the pipeline benchmark: Celery with Redis as broker and result backend, the
original project's job stack, with tasks equivalent to our `noop`, `sleep` and `digest` job types.

Two configurations, labelled in every table:

- **durable** (``BENCH_CELERY_DURABLE=1``), how a careful user runs it: ``task_acks_late`` (a
  message is acknowledged after its task ran, so a worker that dies mid-task does not lose it),
  ``task_reject_on_worker_lost``, ``worker_prefetch_multiplier=1``; Redis with
  ``appendonly yes`` + ``appendfsync everysec`` (every write logged, fsynced each second).
- **default**: Celery's and Redis's defaults: a message is acknowledged when *received*, before
  it runs (a worker that dies mid-task loses it), 4 prefetched per process, and Redis keeps
  everything in memory with periodic snapshots only (an enqueued task or a result can be lost).

Our stack keeps a job until its outcome is committed to the store (Kafka offsets are committed
after it), the durable row is the fair comparison; the default row shows what durability costs.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 [BENCH_CELERY_DURABLE=1] celery -A tests.bench.celery_app worker --pool=solo
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from celery import Celery

from app.jobtypes import REGISTRY

from tests.support.services import ROOT, check_running, free_port, terminate, wait_until


def make_app(redis_url: str, durable: bool = False) -> Celery:
    """A Celery app on ``redis_url`` with the benchmark's tasks: the benchmark makes one per Redis
    it starts (its client side), the workers and the web front get the module's ``app`` from
    BENCH_REDIS_URL and BENCH_CELERY_DURABLE."""
    celery = Celery("joblab_bench", broker=redis_url, backend=redis_url, set_as_current=False)
    celery.conf.update(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        broker_connection_retry_on_startup=True,  # silences Celery 5's deprecation warning only
        worker_hijack_root_logger=False,
    )
    if durable:
        celery.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1)
    celery.task(name="noop")(noop)
    celery.task(name="sleep")(sleep)
    celery.task(name="digest")(digest)
    return celery


# Each returns its completion time (epoch seconds), so the client can compute latency.
def noop() -> float:
    return time.time()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


def digest(rounds: int) -> float:
    REGISTRY["digest"].func(rounds)  # the very function our workers run
    return time.time()


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
               durable=os.environ.get("BENCH_CELERY_DURABLE") == "1")


class RedisServer:
    """A private redis-server on a free loopback port, its state in ``data_dir``."""

    def __init__(self, data_dir: str, durable: bool = False) -> None:
        self.data_dir = data_dir
        self.durable = durable
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc: Optional[subprocess.Popen] = None

    def start(self, seconds: float = 20) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server missing: run provision/host/host-deps.sh bench")
        os.makedirs(self.data_dir, exist_ok=True)
        with open(os.path.join(self.data_dir, "redis.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
                 "--daemonize", "no"] + (["--appendonly", "yes", "--appendfsync", "everysec"] if self.durable else []),
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

    def __init__(self, client: Celery, count: int, log_dir: str, durable: bool = False) -> None:
        self.client = client
        self.env = dict(os.environ, BENCH_REDIS_URL=client.conf.broker_url, PYTHONPATH=ROOT,
                        BENCH_CELERY_DURABLE="1" if durable else "0")
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

    def pids(self) -> List[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:  # TERM all first: warm shutdowns in parallel
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            terminate(p, 30)
