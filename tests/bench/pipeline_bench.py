"""Pipeline benchmark: no-op jobs end to end through our stack (gunicorn -> Kafka -> worker ->
PostgreSQL) and through Celery + Redis (tests/bench/celery_app.py), with the same number of
single-process job workers, submitted from ``clients`` threads as fast as they go.

    .venv-bench/bin/python -m tests.bench.pipeline_bench [--jobs 5000] [--workers 1,2] [--clients 8]
    .venv-bench/bin/python -m tests.bench.pipeline_bench --profile [--jobs 2000]

jobs/s is jobs / (last completion - first submission); latency is submission -> completion
(ours: the job row's created_at -> finished_at, both written by our processes; Celery's: the
client's clock before ``delay()`` -> the time the task returns). When clients submit faster than the
workers drain, latency is mostly time spent queued. submit/s is the rate the API (or
Redis) accepted jobs: when it is close to jobs/s, submission is what bounds the run.
Neither side waits for a disk here: the test PostgreSQL runs with fsync=off, Kafka leaves flushing
to the OS, and Redis runs with its defaults (see celery_app.py).
"""
from __future__ import annotations

import argparse
import http.client
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from sqlalchemy import func, select

from app.store import make_engine
from app.store.schema import jobs as jobs_table
from tests.support.figures import percentile
from tests.support.services import ROOT
from tests.support.stack import BENCH_QUOTA, LocalStack

# Jobs run before each measured batch (and left out of it): gunicorn workers open their Kafka
# producer and database connections lazily, and Celery's first task imports and connects too.
WARMUP = 20
POLL = 0.25


def _deadline(jobs: int) -> float:
    """Seconds allowed for one batch: generous (~20 jobs/s), but an error rather than a hang."""
    return 60 + jobs / 20.0


def _row(system: str, workers: int, span: float, submit_s: float, latencies: List[float]) -> Dict[str, Any]:
    """``span``: first submission -> last completion, seconds; ``latencies`` in seconds."""
    lat = sorted(latencies)
    return {"system": system, "workers": workers, "jobs": len(lat),
            "jobs_per_s": round(len(lat) / span, 1),
            "submit_per_s": round(len(lat) / submit_s, 1),
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1)}


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


# -- our stack --------------------------------------------------------------------------------
class ApiClient:
    """POST /v1/jobs on one keep-alive connection (one client per thread)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        self.body = json.dumps({"type": "noop", "args": {}}).encode()
        self.conn: Optional[http.client.HTTPConnection] = None
        self.resent = 0

    def submit(self) -> str:
        """Submit a noop job; its id."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("POST", "/v1/jobs", body=self.body, headers=self.headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # gunicorn recycles each worker after ~2000 requests (max_requests) and closes its
                # idle keep-alive connections: the request never reached the app; send it again.
                self.close()
                if attempt == 2:
                    raise
                self.resent += 1
                continue
            if resp.status != 202:
                raise RuntimeError("POST /v1/jobs: %d %s" % (resp.status, data[:300]))
            return json.loads(data)["id"]
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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


def wait_all_succeeded(stack: LocalStack, engine: Any, seconds: float) -> None:
    """Until no job in the store is queued or running; any job in another state than succeeded,
    a dead worker or the deadline is an error."""
    deadline = time.monotonic() + seconds
    query = select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)
    while True:
        with engine.connect() as conn:
            counts = dict(conn.execute(query).all())
        pending = counts.pop("queued", 0) + counts.pop("running", 0)
        done = counts.pop("succeeded", 0)
        if counts:
            raise RuntimeError("jobs did not succeed: %s; see %s" % (counts, stack.work_dir))
        if not pending:
            return
        dead = [w.pid for w in stack.workers if not w.running()]
        if dead:
            raise RuntimeError("job worker(s) %s exited; see %s" % (dead, stack.work_dir))
        if time.monotonic() > deadline:
            raise RuntimeError("only %d jobs succeeded after %.0f s, %d still queued or running; see %s"
                               % (done, seconds, pending, stack.work_dir))
        time.sleep(POLL)


def submit_joblab(stack: LocalStack, jobs: int, clients: int) -> Tuple[List[str], float, int]:
    """Submit ``jobs`` noop jobs; their ids, the seconds it took, and how many were resent."""
    made: List[ApiClient] = []
    lock = threading.Lock()

    def new_client() -> Tuple[Callable[[], str], Callable[[], None]]:
        api = ApiClient(stack.url, stack.token)
        with lock:
            made.append(api)
        return api.submit, api.close

    ids, took = submit_all(jobs, clients, new_client)
    return ids, took, sum(api.resent for api in made)


def run_joblab(work_dir: str, jobs: int, workers: int, clients: int) -> Dict[str, Any]:
    with LocalStack(work_dir, job_workers=workers, LOG_LEVEL="WARNING", USER_MAX_ACTIVE=BENCH_QUOTA) as stack:
        engine = make_engine(stack.settings["DATABASE_URL"])
        try:
            wait_for_group(stack, workers)
            submit_joblab(stack, WARMUP, 1)
            wait_all_succeeded(stack, engine, _deadline(WARMUP))
            ids, submit_s, resent = submit_joblab(stack, jobs, clients)
            wait_all_succeeded(stack, engine, _deadline(jobs))
            query = select(jobs_table.c.id, jobs_table.c.created_at, jobs_table.c.finished_at)
            with engine.connect() as conn:
                rows = {r.id: r for r in conn.execute(query)}
        finally:
            engine.dispose()
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RuntimeError("%d submitted jobs are not in the store, e.g. %s" % (len(missing), missing[0]))
    # Naive UTC datetimes from the store; only differences are used.
    mine = [rows[i] for i in ids]
    span = max(r.finished_at for r in mine) - min(r.created_at for r in mine)
    row = _row("joblab", workers, span.total_seconds(), submit_s,
               [(r.finished_at - r.created_at).total_seconds() for r in mine])
    if resent:
        print("joblab, %d workers: %d requests resent after gunicorn closed a keep-alive connection"
              % (workers, resent))
    return row


# -- Celery + Redis ---------------------------------------------------------------------------
def run_celery(work_dir: str, jobs: int, workers: int, clients: int) -> Dict[str, Any]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from .celery_app import CeleryWorkers, RedisServer, make_app

    os.makedirs(work_dir, exist_ok=True)
    redis = RedisServer(os.path.join(work_dir, "redis"))
    pool: Optional[CeleryWorkers] = None
    client = None
    try:
        redis.start()
        client = make_app(redis.url)
        pool = CeleryWorkers(client, workers, work_dir)
        pool.start()
        noop = client.tasks["noop"]

        def new_client() -> Tuple[Callable[[], Tuple[str, float]], Callable[[], None]]:
            def submit() -> Tuple[str, float]:
                t = time.time()
                return noop.delay().id, t
            return submit, lambda: None

        def wait(ids: List[str]) -> Dict[str, float]:
            """task id -> completion time, for all ``ids``; bounded, and failing fast."""
            def check_workers() -> None:
                if not pool.alive():  # type: ignore[union-attr]
                    raise RuntimeError("a celery worker exited; see %s" % work_dir)
            done: Dict[str, float] = {}
            seconds = _deadline(len(ids))
            try:
                for task_id, meta in client.backend.get_many(ids, timeout=seconds, interval=0.1,
                                                             on_interval=check_workers):
                    if meta["status"] != "SUCCESS":
                        raise RuntimeError("celery task %s: %s %s" % (task_id, meta["status"], meta.get("result")))
                    done[task_id] = meta["result"]
            except CeleryTimeout as exc:
                raise RuntimeError("only %d of %d celery tasks done after %.0f s; see %s"
                                   % (len(done), len(ids), seconds, work_dir)) from exc
            return done

        warm, _ = submit_all(WARMUP, 1, new_client)
        wait([task_id for task_id, _t in warm])
        submitted, submit_s = submit_all(jobs, clients, new_client)
        done = wait([task_id for task_id, _t in submitted])
    finally:
        if pool is not None:
            pool.stop()
        if client is not None:
            client.close()
        redis.stop()
    span = max(done.values()) - min(t for _id, t in submitted)
    return _row("celery", workers, span, submit_s,
                [done[task_id] - t for task_id, t in submitted])


# -- the whole run ----------------------------------------------------------------------------
def run(work_dir: str, jobs: int = 5000, worker_counts: Sequence[int] = (1, 2), clients: int = 8
        ) -> List[Dict[str, Any]]:
    """Both systems at each worker count; one row each (see the module's docstring)."""
    rows = []
    for n in worker_counts:
        rows.append(run_joblab(os.path.join(work_dir, "joblab-%dw" % n), jobs, n, clients))
        rows.append(run_celery(os.path.join(work_dir, "celery-%dw" % n), jobs, n, clients))
    return rows


def ratios(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """joblab / celery jobs/s and p50 latency per worker count."""
    by = {(r["system"], r["workers"]): r for r in rows}
    out = []
    for (system, n), ours in sorted(by.items(), key=lambda kv: kv[0][1]):
        theirs = by.get(("celery", n))
        if system == "joblab" and theirs:
            out.append({"workers": n, "jobs_per_s": round(ours["jobs_per_s"] / theirs["jobs_per_s"], 2),
                        "p50": round(ours["p50_ms"] / theirs["p50_ms"], 2)})
    return out


def format_table(rows: List[Dict[str, Any]]) -> str:
    cols = [("system", "system"), ("workers", "workers"), ("jobs", "jobs"), ("jobs_per_s", "jobs/s"),
            ("submit_per_s", "submit/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]
    lines = ["  ".join("%9s" % title for _key, title in cols)]
    lines += ["  ".join("%9s" % r[key] for key, _title in cols) for r in rows]
    for q in ratios(rows):
        lines.append("joblab/celery, %d worker(s): jobs/s x%.2f, p50 latency x%.2f"
                     % (q["workers"], q["jobs_per_s"], q["p50"]))
    return "\n".join(lines)


# -- profile of our worker ----------------------------------------------------------------------
# (file suffix, function) of the worker's per-job stages, as cProfile names them.
STAGES = [
    ("consumer poll (fetch)", "kafka/consumer/group.py", "poll"),
    ("claim_job (UPDATE + SELECT)", "app/store/jobs.py", "claim_job"),
    ("run the job (noop)", "app/jobtypes.py", "run"),
    ("store_success (UPDATE + INSERT result)", "app/store/jobs.py", "store_success"),
    ("outbox row written (INSERT)", "app/store/outbox.py", "add"),
    ("outbox rows deleted (batched, 1 per 50)", "app/store/outbox.py", "remove"),
    ("store transactions (BEGIN/COMMIT + the above)", "worker/publisher.py", "run"),
    ("publish event (acks=all)", "worker/publisher.py", "flush"),
    ("commit offset (sync)", "worker/runner.py", "_commit"),
]


def profile(work_dir: str, jobs: int = 2000, clients: int = 8) -> str:
    """Queue ``jobs`` noop jobs with no worker running, then drain them with one worker under
    cProfile: the profile is the per-job path alone, never waiting for new jobs."""
    with LocalStack(work_dir, job_workers=0, LOG_LEVEL="WARNING", USER_MAX_ACTIVE=BENCH_QUOTA) as stack:
        submit_joblab(stack, jobs, clients)
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
    parser.add_argument("--workers", default="1,2", help="comma-separated job worker counts (default 1,2)")
    parser.add_argument("--clients", type=int, default=8, help="submitting threads (default 8)")
    parser.add_argument("--profile", action="store_true", help="profile one worker of ours instead (cProfile)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="joblab-bench-")
    ok = False
    try:
        if args.profile:
            print(profile(work_dir, args.jobs, args.clients))
        else:
            rows = run(work_dir, args.jobs, [int(n) for n in args.workers.split(",")], args.clients)
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
