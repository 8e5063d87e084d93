"""Pipeline benchmark: jobs end to end, submit -> succeeded, through our stack (gunicorn -> PostgreSQL +
Kafka -> job workers -> PostgreSQL) and through the seed's stack (Celery + Redis, behind the same
kind of front: a Flask endpoint under gunicorn with our gunicorn.conf.py; tests/bench/celery_web.py),
with the same number of single-process job workers, submitted from ``clients`` threads as fast as
they go.

    .venv-bench/bin/python -m tests.bench.pipeline_bench [--jobs 5000] [--workers 2] [--clients 8] [--warmup-seconds 60]
    .venv-bench/bin/python -m tests.bench.pipeline_bench --profile [--jobs 2000]

Rows (system, how jobs are submitted, the job):
- joblab, one job per POST /v1/jobs; joblab bulk, 500 jobs per POST /v1/jobs/batch;
- celery durable (acks_late, prefetch 1, reject_on_worker_lost; Redis appendonly + fsync every
  second) and celery default (Celery's and Redis's defaults: not durable), each behind Flask +
  gunicorn; celery direct: ``delay()`` from the client threads (no HTTP, defaults) - the reference
  the first version of this benchmark used;
- jobs: `noop` (the pipeline's own cost), `sleep` 10 ms (waiting work), `digest` 2000 rounds
  (a small CPU-bound job, ~1 ms here);
- idle latency: one job at a time, the next submitted once the last succeeded.

jobs/s is jobs / (last completion - first submission); latency is submission -> completion (ours:
the job row's created_at -> finished_at, both written by our processes; Celery's: the client's
clock before the submit -> the time the task returns). submit/s is the rate jobs were accepted:
when it is close to jobs/s, submission is what bounds the run. CPU is seconds per 1,000 jobs of
each process group (gunicorn with its workers, job workers, Kafka, PostgreSQL; Celery's workers,
Redis) over the batch, from /proc (tests/bench/cpu.py). The test PostgreSQL runs with fsync=off
and Kafka leaves flushing to the OS; durable Redis fsyncs once a second. Each stack is measured warm:
WARMUP_SECONDS of noop submits first, left out of every figure.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from sqlalchemy import func, select

from app.states import JobStatus
from app.store import make_engine
from app.store.schema import jobs as jobs_table
from tests.bench import cpu
from tests.support.figures import percentile
from tests.support.httpclient import NOT_SENT, Client
from tests.support.services import ROOT, Gunicorn, stack_env
from tests.support.stack import BENCH_QUOTA, LocalStack

# Before the measured batches every stack runs WARMUP_SECONDS of noop submits from all clients
# (left out of the figures), so that each is measured as it runs in production: warm. Gunicorn
# workers open their Kafka producer and database connections lazily and Celery's first task
# imports and connects, but mostly the broker is a JVM: with a 20-job warm-up, 54 % of Kafka's
# CPU during the measured noop batch was its JIT compiler threads (JFR jdk.ThreadCPULoad), and
# Kafka's CPU per job fell from 2.0 to 0.6-0.7 ms after about a minute of load. Redis and Python
# have no such phase; they get the same warm-up anyway.
WARMUP_SECONDS = 60.0
WARMUP_BATCH = 500
POLL = 0.25

#: The jobs each system runs: label -> (type, args).
KINDS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "noop": ("noop", {}),
    "sleep 10 ms": ("sleep", {"seconds": 0.01}),
    "digest 2000": ("digest", {"rounds": 2000}),
}
BULK_SIZE = 500
IDLE_JOBS = 100


def _deadline(jobs: int) -> float:
    """Seconds allowed for one batch: generous (~20 jobs/s), but an error rather than a hang."""
    return 60 + jobs / 20.0


def _row(system: str, submit: str, kind: str, workers: int, span: float, submit_s: float,
         latencies: List[float], cpu_s: Dict[str, float]) -> Dict[str, Any]:
    """``span``: first submission -> last completion, seconds; ``latencies`` in seconds; ``cpu_s``:
    CPU seconds of each process group over the batch."""
    lat = sorted(latencies)
    n = len(lat)
    return {"system": system, "submit": submit, "kind": kind, "workers": workers, "jobs": n,
            "jobs_per_s": round(n / span, 1), "submit_per_s": round(n / submit_s, 1),
            "p50_ms": round(percentile(lat, 50) * 1000, 1), "p99_ms": round(percentile(lat, 99) * 1000, 1),
            "cpu_per_1000": {g: round(v * 1000.0 / n, 2) for g, v in cpu_s.items()}}


def submit_all(jobs: int, clients: int, new_client: Callable[[], Tuple[Callable[[], Any], Callable[[], None]]]
               ) -> Tuple[List[Any], float]:
    """From ``clients`` threads, each with its own ``submit, close = new_client()``, call ``submit()``
    ``jobs`` times in all. Returns the results in submission order and the seconds it took."""
    counter = itertools.count()  # next() is atomic under the GIL: each index goes to one thread
    results: List[Any] = [None] * jobs
    errors: List[BaseException] = []

    def loop() -> None:
        try:
            submit, close = new_client()
            try:
                while not errors:
                    i = next(counter)
                    if i >= jobs:
                        return
                    results[i] = submit()
            finally:
                close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    start = time.monotonic()
    deadline = start + _deadline(jobs)
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    took = time.monotonic() - start
    if errors:
        raise RuntimeError("submitting failed: %s" % errors[0]) from errors[0]
    if any(t.is_alive() for t in threads):
        raise RuntimeError("submitting %d jobs: not done after %.0f s" % (jobs, took))
    return results, took


class ApiClient:
    """POSTs JSON ``body`` to ``path`` on one keep-alive connection (one client per thread), with the
    tests' HTTP client."""

    def __init__(self, url: str, token: str, path: str, body: Any) -> None:
        self.client = Client(url, token, timeout=60)
        self.path = path
        self.body = json.dumps(body).encode()
        self.resent = 0

    def post(self) -> Any:
        """The 202's JSON."""
        for attempt in (1, 2):
            status, parsed, _headers = self.client.raw("POST", self.path, self.body)
            if status == 0 and parsed in NOT_SENT and attempt == 1:
                # gunicorn recycles each worker after ~2000 requests (max_requests) and closes its
                # idle keep-alive connections: the request never reached the app; send it again.
                self.resent += 1
                continue
            if status != 202:
                raise RuntimeError("POST %s: %d %s" % (self.path, status, str(parsed)[:300]))
            return parsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def post_all(url: str, token: str, path: str, body: Any, requests: int, clients: int,
             answer: Callable[[Any], Any]) -> Tuple[List[Any], float]:
    """``requests`` POSTs from ``clients`` threads; ``answer(json)`` of each (with the client's
    clock before it, as (value, t)), and the seconds it took."""
    def new_client() -> Tuple[Callable[[], Any], Callable[[], None]]:
        api = ApiClient(url, token, path, body)

        def submit() -> Any:
            t = time.time()
            return answer(api.post()), t
        return submit, api.close

    return submit_all(requests, clients, new_client)


# -- our stack --------------------------------------------------------------------------------
def wait_for_group(stack: LocalStack, members: int, seconds: float = 60) -> None:
    """Until all job workers are in the consumer group and it is stable: a worker joining during
    the measured batch would stop the whole group for a rebalance."""
    admin = KafkaAdminClient(bootstrap_servers=[stack.broker.bootstrap], client_id="bench")
    try:
        deadline = time.monotonic() + seconds
        group = stack.settings["KAFKA_GROUP"]
        while True:
            try:
                desc = admin.describe_groups([group]).get(group, {})
            except KafkaError:  # e.g. no coordinator yet: the offsets topic is still being made
                desc = {}
            if desc.get("group_state") == "Stable" and len(desc.get("members", [])) == members:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("consumer group %s: %s with %d members after %.0f s, want Stable with %d"
                                   % (group, desc.get("group_state"), len(desc.get("members", [])), seconds, members))
            time.sleep(POLL)
    finally:
        admin.close()


def wait_all_succeeded(stack: LocalStack, engine: Any, seconds: float, poll: float = POLL) -> None:
    """Until no job in the store is queued or running; any job in another state than succeeded,
    a dead worker or the deadline is an error."""
    deadline = time.monotonic() + seconds
    # Only the jobs not succeeded are counted (through ix_jobs_status_finished): a count of the
    # whole table, 20 times a second, cost PostgreSQL ~10 ms a time once the bench had made 30,000
    # jobs - CPU taken from the pipeline being measured.
    others = [s.value for s in JobStatus if s is not JobStatus.SUCCEEDED]
    query = select(jobs_table.c.status, func.count()).where(jobs_table.c.status.in_(others)).group_by(
        jobs_table.c.status)
    while True:
        with engine.connect() as conn:
            counts = dict(conn.execute(query).all())
        pending = counts.pop("queued", 0) + counts.pop("running", 0)
        if counts:
            raise RuntimeError("jobs did not succeed: %s; see %s" % (counts, stack.work_dir))
        if not pending:
            return
        dead = [w.pid for w in stack.workers if not w.running()]
        if dead:
            raise RuntimeError("job worker(s) %s exited; see %s" % (dead, stack.work_dir))
        if time.monotonic() > deadline:
            raise RuntimeError("%d jobs still queued or running after %.0f s; see %s"
                               % (pending, seconds, stack.work_dir))
        time.sleep(poll)


def joblab_meter(stack: LocalStack) -> cpu.Meter:
    assert stack.gunicorn is not None and stack.gunicorn.proc is not None
    web = stack.gunicorn.proc.pid
    groups: Dict[str, cpu.Roots] = {
        "gunicorn": lambda: [web],
        "job workers": lambda: [w.pid for w in stack.workers],
        "kafka": lambda: cpu.pidfile(os.path.join(stack.broker.env["KAFKA_DATA_DIR"], "kafka.pid")),
    }
    if stack.postgres is not None:
        pg = stack.postgres
        groups["postgresql"] = lambda: cpu.pidfile(os.path.join(pg.data, "postmaster.pid"))
    return cpu.Meter(groups)


def _store_times(engine: Any, ids: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    query = select(jobs_table.c.id, jobs_table.c.created_at, jobs_table.c.finished_at)
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            out.update({r.id: r for r in conn.execute(query.where(jobs_table.c.id.in_(ids[i:i + 500])))})
    return out


def _joblab_row(system: str, submit: str, kind: str, stack: LocalStack, engine: Any, ids: List[str],
                submit_s: float, cpu_s: Dict[str, float]) -> Dict[str, Any]:
    rows = _store_times(engine, ids)
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RuntimeError("%d submitted jobs are not in the store, e.g. %s" % (len(missing), missing[0]))
    mine = [rows[i] for i in ids]
    # Naive UTC datetimes from the store; only differences are used.
    span = max(r.finished_at for r in mine) - min(r.created_at for r in mine)
    return _row(system, submit, kind, len(stack.workers), span.total_seconds(), submit_s,
                [(r.finished_at - r.created_at).total_seconds() for r in mine], cpu_s)


def measure_joblab(stack: LocalStack, engine: Any, kind: str, jobs: int, clients: int,
                   bulk: int = 0) -> Dict[str, Any]:
    """``jobs`` of ``kind`` through POST /v1/jobs, or, with ``bulk``, that many per POST /v1/jobs/batch."""
    job_type, args = KINDS[kind]
    meter = joblab_meter(stack)
    meter.start()
    if bulk:
        body = {"jobs": [{"type": job_type, "args": args}] * bulk}
        answers, submit_s = post_all(stack.url, stack.token, "/v1/jobs/batch", body, max(1, jobs // bulk), clients,
                                     lambda a: [j["id"] for j in a["jobs"]])
        ids = [i for batch, _t in answers for i in batch]
    else:
        answers, submit_s = post_all(stack.url, stack.token, "/v1/jobs", {"type": job_type, "args": args}, jobs,
                                     clients, lambda a: a["id"])
        ids = [i for i, _t in answers]
    wait_all_succeeded(stack, engine, _deadline(len(ids)), poll=0.05)
    cpu_s = meter.stop()
    return _joblab_row("joblab", "bulk %d/POST" % bulk if bulk else "1/POST", kind, stack, engine, ids, submit_s, cpu_s)


def idle_joblab(stack: LocalStack, engine: Any, jobs: int = IDLE_JOBS) -> Dict[str, Any]:
    """One noop job at a time: submitted once the last one succeeded."""
    api = ApiClient(stack.url, stack.token, "/v1/jobs", {"type": "noop", "args": {}})
    ids = []
    meter = joblab_meter(stack)
    meter.start()
    t0 = time.monotonic()
    try:
        query = select(jobs_table.c.status)
        for _ in range(jobs):
            job_id = api.post()["id"]
            ids.append(job_id)
            deadline = time.monotonic() + 30
            while True:
                with engine.connect() as conn:
                    status = conn.execute(query.where(jobs_table.c.id == job_id)).scalar()
                if status == "succeeded":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("idle job %s: %s after 30 s" % (job_id, status))
                time.sleep(0.001)
    finally:
        api.close()
    return _joblab_row("joblab", "1/POST, idle", "noop", stack, engine, ids, time.monotonic() - t0, meter.stop())


def warm_up(run_batch: Callable[[int], None], seconds: float) -> None:
    """``run_batch(n)`` (submit n noop jobs and wait for them) until ``seconds`` have passed, at
    least once."""
    deadline = time.monotonic() + seconds
    while True:
        run_batch(WARMUP_BATCH)
        if time.monotonic() >= deadline:
            return


def run_joblab(work_dir: str, workers: int, clients: int, jobs: int, kind_jobs: int, bulk_jobs: int,
               worker_class: str, warmup_seconds: float = WARMUP_SECONDS) -> List[Dict[str, Any]]:
    rows = []
    with LocalStack(work_dir, job_workers=workers, worker_class=worker_class, LOG_LEVEL="WARNING",
                    USER_MAX_ACTIVE=BENCH_QUOTA) as stack:
        engine = make_engine(stack.settings["DATABASE_URL"])
        try:
            wait_for_group(stack, workers)

            def batch(n: int) -> None:
                post_all(stack.url, stack.token, "/v1/jobs", {"type": "noop", "args": {}}, n, clients, lambda a: a)
                wait_all_succeeded(stack, engine, _deadline(n))
            warm_up(batch, warmup_seconds)
            rows.append(measure_joblab(stack, engine, "noop", jobs, clients))
            rows.append(measure_joblab(stack, engine, "noop", bulk_jobs, clients, bulk=BULK_SIZE))
            for kind in ("sleep 10 ms", "digest 2000"):
                rows.append(measure_joblab(stack, engine, kind, kind_jobs, clients))
            rows.append(idle_joblab(stack, engine))
        finally:
            engine.dispose()
    return rows


# -- Celery + Redis ---------------------------------------------------------------------------
class CeleryStack:
    """Redis, ``workers`` Celery workers and, with ``via_http``, the Flask front under gunicorn."""

    def __init__(self, work_dir: str, workers: int, durable: bool, via_http: bool, worker_class: str) -> None:
        from .celery_app import CeleryWorkers, RedisServer, make_app

        os.makedirs(work_dir, exist_ok=True)
        self.work_dir = work_dir
        self.redis = RedisServer(os.path.join(work_dir, "redis"), durable=durable)
        self.redis.start()
        self.client = make_app(self.redis.url, durable=durable)
        self.pool = CeleryWorkers(self.client, workers, work_dir, durable=durable)
        self.token = "bench-" + os.urandom(8).hex()
        self.web: Optional[Gunicorn] = None
        try:
            self.pool.start()
            if via_http:
                env = stack_env({}, BENCH_REDIS_URL=self.redis.url, BENCH_CELERY_DURABLE="1" if durable else "0",
                                BENCH_TOKEN=self.token)
                self.web = Gunicorn(env, os.path.join(work_dir, "gunicorn.log"), worker_class=worker_class,
                                    app="tests.bench.celery_web:app")
                self.web.start()
        except BaseException:
            self.close()
            raise

    def meter(self) -> cpu.Meter:
        redis_pid = self.redis.proc.pid if self.redis.proc is not None else 0
        groups: Dict[str, cpu.Roots] = {"celery workers": self.pool.pids, "redis": lambda: [redis_pid]}
        if self.web is not None and self.web.proc is not None:
            web = self.web.proc.pid
            groups = dict({"gunicorn": lambda: [web]}, **groups)
        return cpu.Meter(groups)

    def wait(self, ids: List[str]) -> Dict[str, float]:
        """task id -> completion time, for all ``ids``; bounded, and failing fast."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        def check_workers() -> None:
            if not self.pool.alive():
                raise RuntimeError("a celery worker exited; see %s" % self.work_dir)
        done: Dict[str, float] = {}
        seconds = _deadline(len(ids))
        try:
            for task_id, meta in self.client.backend.get_many(ids, timeout=seconds, interval=0.01,
                                                              on_interval=check_workers):
                if meta["status"] != "SUCCESS":
                    raise RuntimeError("celery task %s: %s %s" % (task_id, meta["status"], meta.get("result")))
                done[task_id] = meta["result"]
        except CeleryTimeout as exc:
            raise RuntimeError("only %d of %d celery tasks done after %.0f s; see %s"
                               % (len(done), len(ids), seconds, self.work_dir)) from exc
        return done

    def submit(self, kind: str, jobs: int, clients: int) -> Tuple[List[Tuple[str, float]], float]:
        job_type, args = KINDS[kind]
        if self.web is not None:
            return post_all(self.web.url, self.token, "/jobs", {"type": job_type, "args": args}, jobs, clients,
                            lambda a: a["id"])
        task = self.client.tasks[job_type]

        def new_client() -> Tuple[Callable[[], Tuple[str, float]], Callable[[], None]]:
            def submit() -> Tuple[str, float]:
                t = time.time()
                return task.delay(**args).id, t
            return submit, lambda: None

        return submit_all(jobs, clients, new_client)

    def measure(self, name: str, kind: str, jobs: int, clients: int) -> Dict[str, Any]:
        meter = self.meter()
        meter.start()
        submitted, submit_s = self.submit(kind, jobs, clients)
        done = self.wait([task_id for task_id, _t in submitted])
        cpu_s = meter.stop()
        span = max(done.values()) - min(t for _id, t in submitted)
        return _row(name, "1/POST" if self.web else "delay(), no HTTP", kind, len(self.pool.pids()), span, submit_s,
                    [done[task_id] - t for task_id, t in submitted], cpu_s)

    def idle(self, name: str, jobs: int = IDLE_JOBS) -> Dict[str, Any]:
        meter = self.meter()
        meter.start()
        submitted, t0 = [], time.monotonic()
        done: Dict[str, float] = {}
        for _ in range(jobs):
            [(task_id, t)], _s = self.submit("noop", 1, 1)
            submitted.append((task_id, t))
            done.update(self.wait([task_id]))
        span = max(done.values()) - min(t for _id, t in submitted)
        row = _row(name, "1/POST, idle", "noop", len(self.pool.pids()), span, time.monotonic() - t0,
                   [done[i] - t for i, t in submitted], meter.stop())
        return row

    def warm(self, clients: int, seconds: float) -> None:
        def batch(n: int) -> None:
            self.wait([i for i, _t in self.submit("noop", n, clients)[0]])
        warm_up(batch, seconds)

    def close(self) -> None:
        for stop in (lambda: self.web and self.web.stop(), self.pool.stop, self.client.close, self.redis.stop):
            try:
                stop()
            except Exception as exc:  # the others still stop
                print("bench: stopping part of the celery stack: %s" % exc, file=sys.stderr)


def run_celery(work_dir: str, workers: int, clients: int, jobs: int, kind_jobs: int,
               worker_class: str, warmup_seconds: float = WARMUP_SECONDS) -> List[Dict[str, Any]]:
    rows = []
    for name, durable, via_http, kinds in (("celery durable", True, True, list(KINDS)),
                                       ("celery default", False, True, ["noop"]),
                                       ("celery default", False, False, ["noop"])):
        stack = CeleryStack(os.path.join(work_dir, "%s-%s" % (name.replace(" ", "-"), "http" if via_http else "direct")),
                            workers, durable, via_http, worker_class)
        try:
            stack.warm(clients, warmup_seconds)
            for kind in kinds:
                rows.append(stack.measure(name, kind, jobs if kind == "noop" else kind_jobs, clients))
            if durable:
                rows.append(stack.idle(name))
        finally:
            stack.close()
    return rows


# -- the whole run ----------------------------------------------------------------------------
def run(work_dir: str, jobs: int = 5000, workers: int = 2, clients: int = 8, kind_jobs: int = 2000,
        bulk_jobs: int = 20000, worker_class: str = "gevent", warmup_seconds: float = WARMUP_SECONDS) -> List[Dict[str, Any]]:
    """Every row of the module's docstring, ours first."""
    rows = run_joblab(os.path.join(work_dir, "joblab"), workers, clients, jobs, kind_jobs, bulk_jobs, worker_class,
                      warmup_seconds)
    rows += run_celery(os.path.join(work_dir, "celery"), workers, clients, jobs, kind_jobs, worker_class,
                       warmup_seconds)
    return rows


def _find(rows: List[Dict[str, Any]], system: str, submit: str, kind: str = "noop") -> Optional[Dict[str, Any]]:
    return next((r for r in rows if r["system"] == system and r["submit"].startswith(submit) and r["kind"] == kind), None)


def ratios(rows: List[Dict[str, Any]]) -> List[Tuple[str, float, str]]:
    """(what, value, target) of the throughput issue's targets, from one run's rows."""
    out: List[Tuple[str, float, str]] = []

    def ratio(label: str, ours: Optional[Dict[str, Any]], theirs: Optional[Dict[str, Any]], target: str) -> None:
        if ours and theirs:
            out.append((label, round(ours["jobs_per_s"] / theirs["jobs_per_s"], 2), target))

    single = _find(rows, "joblab", "1/POST")
    ratio("noop, 1/POST: joblab / celery durable behind Flask, jobs/s", single, _find(rows, "celery durable", "1/POST"),
          ">= 1.0")
    ratio("noop, 1/POST: joblab / celery default behind Flask (not durable), jobs/s", single,
          _find(rows, "celery default", "1/POST"), "-")
    ratio("noop: joblab 1/POST / celery default delay() (no HTTP, not durable), jobs/s", single,
          _find(rows, "celery default", "delay()"), "-")
    for kind in ("sleep 10 ms", "digest 2000"):
        ratio("%s, 1/POST: joblab / celery durable, jobs/s" % kind, _find(rows, "joblab", "1/POST", kind),
              _find(rows, "celery durable", "1/POST", kind), ">= 1.0")
    bulk = _find(rows, "joblab", "bulk")
    if bulk:
        out.append(("noop, bulk: joblab jobs/s", bulk["jobs_per_s"], ">= 3000"))
    idle = _find(rows, "joblab", "1/POST, idle")
    if idle:
        out.append(("idle latency p50, joblab, ms", idle["p50_ms"], "<= 25"))
    return out


def _cpu_text(r: Dict[str, Any]) -> str:
    return ", ".join("%s %.2f" % (g, v) for g, v in r["cpu_per_1000"].items())


def format_table(rows: List[Dict[str, Any]]) -> str:
    head = "%-15s %-17s %-12s %7s %6s %8s %9s %8s %8s  %s" % (
        "system", "submit", "job", "workers", "jobs", "jobs/s", "submit/s", "p50 ms", "p99 ms",
        "CPU s per 1000 jobs")
    lines = [head]
    for r in rows:
        lines.append("%-15s %-17s %-12s %7d %6d %8.0f %9.0f %8.1f %8.1f  %s" % (
            r["system"], r["submit"], r["kind"], r["workers"], r["jobs"], r["jobs_per_s"], r["submit_per_s"],
            r["p50_ms"], r["p99_ms"], _cpu_text(r)))
    for label, value, target in ratios(rows):
        lines.append("%s: %s%s" % (label, value, "" if target == "-" else " (target %s)" % target))
    return "\n".join(lines)


def markdown(rows: List[Dict[str, Any]]) -> List[str]:
    out = ["| system | submit | job | workers | jobs | jobs/s | submitted/s | p50 ms | p99 ms | CPU s per 1,000 jobs |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append("| %s | %s | %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %s |" % (
            r["system"], r["submit"], r["kind"], r["workers"], r["jobs"], r["jobs_per_s"], r["submit_per_s"],
            r["p50_ms"], r["p99_ms"], _cpu_text(r)))
    out.append("")
    out += ["- %s: **%s**%s" % (label, value, "" if target == "-" else " (target %s)" % target)
            for label, value, target in ratios(rows)]
    return out


# -- profile of our worker ----------------------------------------------------------------------
# (file suffix, function) of the worker's per-job stages, as cProfile names them.
STAGES = [
    ("consumer poll (fetch, a batch at a time)", "kafka/consumer/group.py", "poll"),
    ("claim_jobs (one UPDATE ... RETURNING a batch)", "app/store/jobs.py", "claim_jobs"),
    ("claim_job (one record's own claim)", "app/store/jobs.py", "claim_job"),
    ("run the job (noop)", "app/jobtypes.py", "run"),
    ("store_successes (UPDATE + INSERT results)", "app/store/jobs.py", "store_successes"),
    ("outbox rows written (INSERT)", "app/store/outbox.py", "add"),
    ("outbox rows deleted (in the next transaction)", "app/store/outbox.py", "remove"),
    ("store transactions (BEGIN/COMMIT + the above)", "worker/publisher.py", "run"),
    ("publish (send, no wait)", "worker/publisher.py", "flush"),
    ("acks of a batch (one wait)", "worker/publisher.py", "wait"),
    ("commit offsets (one per batch)", "worker/runner.py", "_commit"),
]


def profile(work_dir: str, jobs: int = 2000, clients: int = 8) -> str:
    """Queue ``jobs`` noop jobs with no worker running, then drain them with one worker under
    cProfile: the profile is the per-job path alone, never waiting for new jobs."""
    with LocalStack(work_dir, job_workers=0, LOG_LEVEL="WARNING", USER_MAX_ACTIVE=BENCH_QUOTA) as stack:
        post_all(stack.url, stack.token, "/v1/jobs/batch", {"jobs": [{"type": "noop", "args": {}}] * BULK_SIZE},
                 max(1, jobs // BULK_SIZE), clients, lambda a: a)
        jobs = max(1, jobs // BULK_SIZE) * BULK_SIZE
        out = os.path.join(work_dir, "worker.prof")
        with open(stack.log("worker-profiled"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", out, "-m", "worker",
                                     "--max-messages", str(jobs)], env=stack.env(), cwd=ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(_deadline(jobs))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise RuntimeError("the profiled worker did not handle %d jobs in %.0f s; see %s"
                               % (jobs, _deadline(jobs), stack.log("worker-profiled")))
        if code != 0:
            raise RuntimeError("the profiled worker exited with %s; see %s" % (code, stack.log("worker-profiled")))
    return format_profile(out, jobs)


def format_profile(path: str, jobs: int) -> str:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]

    def cumulative(suffix: str, name: str) -> float:
        return sum(v[3] for (file, _line, fn), v in stats.items() if fn == name and file.endswith(suffix))

    total = cumulative("worker/runner.py", "run")  # the loop, from the first poll (joining the group) on
    lines = ["worker loop's wall time under cProfile: %.2f s for %d jobs = %.2f ms/job" % (total, jobs, total / jobs * 1000)]
    for label, suffix, name in STAGES:
        t = cumulative(suffix, name)
        lines.append("  %-42s %6.3f ms/job  %5.1f %%" % (label, t / jobs * 1000, 100 * t / total))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pipeline_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="job workers of each system (default 2)")
    parser.add_argument("--clients", type=int, default=8, help="submitting threads (default 8)")
    parser.add_argument("--kind-jobs", type=int, default=2000, help="jobs of the sleep and digest rows (default 2000)")
    parser.add_argument("--bulk-jobs", type=int, default=20000, help="jobs of the bulk row (default 20000)")
    parser.add_argument("--worker-class", default="gevent", help="gunicorn worker class of both fronts")
    parser.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS,
                        help="noop load each stack runs before it is measured (default %(default)s)")
    parser.add_argument("--profile", action="store_true", help="profile one worker of ours instead (cProfile)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="joblab-bench-")
    ok = False
    try:
        if args.profile:
            print(profile(work_dir, args.jobs, args.clients))
        else:
            rows = run(work_dir, args.jobs, args.workers, args.clients, args.kind_jobs, args.bulk_jobs,
                       args.worker_class, args.warmup_seconds)
            print(format_table(rows))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=2)
        ok = True
    finally:
        if ok:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print("bench: logs kept in %s" % work_dir, file=sys.stderr)


if __name__ == "__main__":
    main()
