"""Prometheus metrics (the official client, prometheus_client), served at GET /metrics.

Under gunicorn every request may land on another worker process, and the job workers are
processes of their own: with METRICS_DIR set, each process writes its figures to files under
METRICS_DIR/<role> (prometheus_client's multiprocess mode) and /metrics adds them all up. That
mode is chosen when prometheus_client is imported, so ``configure`` must run first - it does, in
create_app and in the worker's main, and this module imports the client only inside functions.

Counted where it happens: submits (web), attempts, run time, queue wait, finished jobs and dead
letters (worker), requests (web). Asked at scrape time (cached METRICS_CACHE_SECONDS): jobs per
state, the oldest queued job, consumer lag per partition, workers in the group."""
from __future__ import annotations

import glob
import logging
import os
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, Optional

log = logging.getLogger(__name__)

#: Subdirectories of METRICS_DIR, one per kind of process.
ROLES = ("web", "worker")

#: Run times of jobs and queue waits (seconds): from a noop's milliseconds to JOB_MAX_SECONDS' hour.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Request latencies (seconds).
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_made: Dict[str, SimpleNamespace] = {}
_lock = threading.Lock()

#: The request methods counted by name; any other is counted as "other" (clients choose methods).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def role_dir(base: str, role: str) -> str:
    return os.path.join(base, role)


def configure(base: str, role: str) -> None:
    """Multiprocess mode for this process (``role``: web or worker) when ``base`` is set: before
    prometheus_client is imported. Makes the roles' directories (the app user owns ``base``); if
    that fails, this process keeps its figures to itself rather than failing to start."""
    if not base:
        return
    try:
        for name in ROLES:
            os.makedirs(role_dir(base, name), mode=0o750, exist_ok=True)
    except OSError as exc:
        log.warning("METRICS_DIR %s unusable (%s): this process reports only its own metrics", base, exc)
        return
    wanted = role_dir(base, role)
    if "prometheus_client.values" in sys.modules and os.environ.get("PROMETHEUS_MULTIPROC_DIR") != wanted:
        log.warning("prometheus_client was imported before METRICS_DIR was applied: this process's "
                    "metrics stay its own")
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = wanted


def forget_files(base: str, role: str) -> None:
    """Delete a role's metric files: at gunicorn's start (its old workers are gone), so counters
    start from zero rather than piling up files of dead processes (Prometheus sees a reset)."""
    for path in glob.glob(os.path.join(role_dir(base, role), "*.db")):
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not delete %s: %s", path, exc)


def process_exited(pid: int) -> None:
    """A process of this role is gone: its live gauges stop counting (counters are kept)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def web() -> SimpleNamespace:
    """The API's counters and histograms, made once per process (after ``configure``)."""
    return _once("web", _make_web)


def worker() -> SimpleNamespace:
    """The job workers' counters and histograms. Made only where jobs run, so that no metric is
    written under both roles' directories (a scrape would list it twice)."""
    return _once("worker", _make_worker)


def _once(role: str, make: Callable[[], SimpleNamespace]) -> SimpleNamespace:
    found = _made.get(role)
    if found is None:
        with _lock:
            found = _made.get(role)
            if found is None:
                found = _made[role] = make()
    return found


def _make_web() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        submitted=Counter("joblab_jobs_submitted", "Jobs accepted (202/207): recorded and on Kafka.", ["type"]),
        requests=Counter("joblab_http_requests", "HTTP requests, by route template, method and status.",
                         ["route", "method", "status"]),
        latency=Histogram("joblab_http_request_duration_seconds", "Time to answer, by route template.",
                          ["route"], buckets=HTTP_BUCKETS),
    )


def _make_worker() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        finished=Counter("joblab_jobs_finished", "Jobs that reached an end state, by outcome (succeeded, failed, "
                         "cancelled).", ["type", "outcome"]),
        attempts=Counter("joblab_job_attempts", "Runs of jobs, by how the run ended (succeeded, failed, "
                         "timed_out).", ["type", "outcome"]),
        run_seconds=Histogram("joblab_job_run_seconds", "How long a job's run took.", ["type"],
                              buckets=JOB_BUCKETS),
        queue_wait=Histogram("joblab_job_queue_wait_seconds", "From submit to the first claim.", ["type"],
                             buckets=JOB_BUCKETS),
        dead_letters=Counter("joblab_dead_letters", "Records written to the dead-letter topic."),
    )


def safely(record: Callable[[], Any]) -> None:
    """Counting must never cost a request or a job: a failure is logged, not raised."""
    try:
        record()
    except Exception as exc:
        log.warning("recording a metric failed: %s", exc)


class Cached:
    """``fetch()`` at most once per ``seconds``; the last figures (or failure) in between."""

    def __init__(self, fetch: Callable[[], Any], seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch, self.seconds, self.clock = fetch, seconds, clock
        self._at: Optional[float] = None
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.seconds:
                try:
                    self._value = self.fetch()
                except Exception as exc:  # reported as missing figures, not as a failed scrape
                    log.warning("metrics: %s unavailable (%s)", getattr(self.fetch, "__name__", "figures"),
                                exc.__class__.__name__)
                    self._value = None
                self._at = now
            return self._value


class WindowCollector:
    """The figures asked for at scrape time: from the store (jobs per state and type, the oldest
    queued job) and from Kafka (lag per partition, workers in the group)."""

    def __init__(self, store: Callable[[], Dict[str, Any]], kafka: Callable[[], Optional[Dict[str, Any]]]) -> None:
        self.store, self.kafka = store, kafka

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        store = self.store()
        up = GaugeMetricFamily("joblab_store_up", "1 if the store answered the last question of /metrics.")
        up.add_metric([], 0 if store is None else 1)
        yield up
        if store is not None:
            jobs = GaugeMetricFamily("joblab_jobs", "Jobs in the store, by state and type.", labels=["state", "type"])
            for (state, job_type), n in sorted(store["by_state"].items()):
                jobs.add_metric([state, job_type], n)
            yield jobs
            yield GaugeMetricFamily("joblab_oldest_queued_job_age_seconds",
                                    "Seconds since the job queued longest became queued (0: none).",
                                    value=store["oldest_queued"])
        kafka = self.kafka()
        kup = GaugeMetricFamily("joblab_kafka_up", "1 if Kafka answered the last question of /metrics.")
        kup.add_metric([], 0 if kafka is None else 1)
        yield kup
        if kafka is not None:
            lag = GaugeMetricFamily("joblab_consumer_lag", "Messages not yet committed by the job workers' group.",
                                    labels=["topic", "partition"])
            for (topic, partition), n in sorted(kafka["lag"].items()):
                lag.add_metric([topic, str(partition)], n)
            yield lag
            yield GaugeMetricFamily("joblab_workers", "Members of the job workers' consumer group.",
                                    value=len(kafka["members"]))


def exposition(base: str, window: WindowCollector) -> bytes:
    """The text format of every process's figures (all roles when ``base`` is set) and the window's."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if base and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        for role in ROLES:
            multiprocess.MultiProcessCollector(registry, path=role_dir(base, role))
        registry.register(window)
        return generate_latest(registry)
    web()  # so that the API's counters are listed before anything happened
    registry = CollectorRegistry()
    registry.register(_Both(REGISTRY, window))
    return generate_latest(registry)


class _Both:
    """One process's own registry plus the window (single-process mode: tests, no METRICS_DIR)."""

    def __init__(self, own: Any, window: WindowCollector) -> None:
        self.own, self.window = own, window

    def collect(self) -> Iterator[Any]:
        yield from self.own.collect()
        yield from self.window.collect()
