"""Settings: defaults first, then JOBLAB_* environment variables, then a test config.

Every setting the app and the worker read lives here, under one prefix, so a deployment is
described by one environment file (supervisor's ``environment=`` or ``/etc/sysconfig``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

ENV_PREFIX = "JOBLAB_"

DEFAULTS: Dict[str, Any] = {
    # SQLAlchemy URL of the results store: sqlite:///..., postgresql+psycopg://..., mssql+pymssql://...
    "DATABASE_URL": "sqlite:///var/joblab.sqlite3",
    # Comma-separated Kafka bootstrap servers.
    "KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    # Prefix for every topic name, so several stacks (or tests) can share one broker.
    "KAFKA_TOPIC_PREFIX": "",
    # Consumer group of the job workers.
    "KAFKA_GROUP": "workers",
    # Partitions of the jobs topic: the ceiling on parallel job workers.
    "KAFKA_PARTITIONS": 4,
    # Replicas of each job topic when `flask kafka create-topics` makes it (the lab's cluster: 3;
    # the brokers' min.insync.replicas decides how many an acknowledged job is on).
    "KAFKA_REPLICATION": 1,
    # How long a request waits for Kafka to acknowledge a job (acks=all) before answering 503.
    "KAFKA_SEND_TIMEOUT": 10.0,
    # Milliseconds a produced record waits for others to share its request to Kafka (the API's and
    # the workers' producers). 0: sent at once; records still share requests while one is in flight.
    "KAFKA_LINGER_MS": 0.0,
    # Largest request body accepted (bytes); larger gets 413.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # Most jobs one POST /v1/jobs/batch takes.
    "BATCH_MAX": 500,
    # Deepest nesting of arrays/objects in a request body; deeper gets 400 before it is parsed.
    "MAX_JSON_DEPTH": 32,
    # Jobs one user may have queued or running at once; one more submit gets 429 (0: no limit).
    "USER_MAX_ACTIVE": 1000,
    # Seconds a 429 over the quota tells the client to wait (Retry-After).
    "QUOTA_RETRY_AFTER": 5,
    # Seconds a process remembers a token it looked up (0: look up every request). Expiry stays
    # exact; a revocation takes effect within this long.
    "TOKEN_CACHE_SECONDS": 2.0,
    # Page size of GET /v1/jobs when the client gives none, and its ceiling.
    "PAGE_SIZE": 20,
    "PAGE_SIZE_MAX": 100,
    # Longest job allowed, in seconds (`sleep` accepts up to this). The worker's max.poll.interval
    # and outbox lease, and supervisor's stopwaitsecs for job workers, are derived from it.
    "JOB_MAX_SECONDS": 60.0,
    # Worker: executions per job before it is failed and dead-lettered.
    "MAX_ATTEMPTS": 3,
    # Worker: first retry delay in seconds; doubles each attempt up to RETRY_BACKOFF_MAX.
    "RETRY_BACKOFF": 0.5,
    "RETRY_BACKOFF_MAX": 30.0,
    # Worker: most records taken per poll. Their messages are acknowledged and their offsets
    # committed together (worker/runner.py, handle_batch); 1 commits after every job.
    "WORKER_BATCH": 100,
    # Worker: a job still `queued` this many seconds after its last change, whose message is
    # nowhere (its API process died between the INSERT and the produce), is settled by the
    # sweep (worker/sweep.py), which runs every SWEEP_EVERY seconds.
    "STRANDED_AFTER": 120.0,
    "SWEEP_EVERY": 30.0,
    # Directory where the API's and the workers' processes keep their Prometheus metrics (each
    # role in a subdirectory it makes: web/, worker/), so GET /metrics on any gunicorn worker
    # reports all of them. Empty: each process reports only its own (make run sets one).
    "METRICS_DIR": "",
    # Seconds GET /metrics reuses the figures it asks the store and Kafka for (jobs per state,
    # the oldest queued job, consumer lag, workers in the group): scrapes cost that at most.
    "METRICS_CACHE_SECONDS": 5.0,
    # The dashboard's login cookie is Secure (sent over HTTPS only; browsers also send it to
    # http://127.0.0.1 and localhost). Off only for a dashboard reached over plain HTTP elsewhere.
    "DASHBOARD_SECURE_COOKIE": True,
    # Lowest level logged by the API and the worker: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    "LOG_LEVEL": "INFO",
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Bounds of JOB_MAX_SECONDS: supervisor waits this long (plus a little) for a stopping worker.
JOB_MAX_SECONDS_RANGE = (1.0, 3600.0)


def _coerce(default: Any, raw: str) -> Any:
    """Environment values are strings; give them the type of their default."""
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load_settings(
    overrides: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None
) -> Dict[str, Any]:
    """Merge defaults, JOBLAB_* variables and ``overrides`` (highest), with a clear error on a bad value."""
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        raw = environ.get(ENV_PREFIX + key)
        if raw is None or raw == "":
            continue
        try:
            settings[key] = _coerce(default, raw)
        except ValueError:
            raise SystemExit(
                "%s%s=%r is not a valid %s" % (ENV_PREFIX, key, raw, type(default).__name__)
            ) from None
    if overrides:
        settings.update(overrides)
    settings["LOG_LEVEL"] = str(settings["LOG_LEVEL"]).upper()
    if settings["LOG_LEVEL"] not in LOG_LEVELS:
        raise SystemExit("%sLOG_LEVEL=%r is not one of %s" % (ENV_PREFIX, settings["LOG_LEVEL"], ", ".join(LOG_LEVELS)))
    low, high = JOB_MAX_SECONDS_RANGE
    if not low <= float(settings["JOB_MAX_SECONDS"]) <= high:
        raise SystemExit("%sJOB_MAX_SECONDS=%r is not between %g and %g seconds"
                         % (ENV_PREFIX, settings["JOB_MAX_SECONDS"], low, high))
    return settings
