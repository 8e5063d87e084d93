"""What the operators' window reads from the store (GET /metrics and /dashboard): jobs per state and
type, the oldest queued job, throughput by minute, the latest failures, the workers seen lately.
Each is one bounded query; the history (job_events) makes the time-based ones cheap (its
(kind, at) index)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine

from ..states import JobStatus
from .jobs import NOT_ENQUEUED
from .schema import job_events, jobs, users
from .users import utcnow


def jobs_by_state_and_type(engine: Engine) -> Dict[Tuple[str, str], int]:
    """(status, type) -> jobs."""
    query = select(jobs.c.status, jobs.c.type, func.count()).group_by(jobs.c.status, jobs.c.type)
    with engine.connect() as conn:
        return {(status, job_type): n for status, job_type, n in conn.execute(query)}


def oldest_queued_age(engine: Engine) -> float:
    """Seconds since the job queued longest became queued (0 when none is)."""
    query = select(func.min(jobs.c.updated_at)).where(jobs.c.status == JobStatus.QUEUED.value)
    with engine.connect() as conn:
        oldest = conn.execute(query).scalar()
    return 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())


def finished_per_minute(engine: Engine, minutes: int = 60) -> List[Tuple[int, int, int]]:
    """(minutes ago, succeeded, failed) for each of the last ``minutes`` minutes, oldest first.
    Counted by the store in one pass over the hour's rows of the (kind, at) index: a busy hour's
    million steps never travel to Python."""
    now = utcnow()
    edges = [now - timedelta(minutes=m) for m in range(minutes, -1, -1)]  # oldest first
    buckets = [func.sum(case((and_(job_events.c.at >= lo, job_events.c.at < hi), 1), else_=0)).label("m%d" % i)
               for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    query = select(job_events.c.kind, *buckets).where(
        job_events.c.kind.in_(["succeeded", "failed"]), job_events.c.at >= edges[0]).group_by(job_events.c.kind)
    counts = {"succeeded": [0] * minutes, "failed": [0] * minutes}
    with engine.connect() as conn:
        for row in conn.execute(query):
            counts[row[0]] = [int(v or 0) for v in row[1:]]
    return [(minutes - 1 - i, counts["succeeded"][i], counts["failed"][i]) for i in range(minutes)]


#: Failed jobs that were dead-lettered: all but those Kafka never took (their submit was a 503).
_dead_lettered = or_(jobs.c.error.is_(None), ~jobs.c.error.startswith(NOT_ENQUEUED, autoescape=True))


def latest_failures(engine: Engine, limit: int = 20, job_type: Optional[str] = None) -> List[Dict[str, Any]]:
    """The most recently failed (dead-lettered) jobs, newest first, with their owner and error (the
    (status, finished_at) index)."""
    query = (select(jobs.c.id, jobs.c.type, jobs.c.attempts, jobs.c.error, jobs.c.finished_at, users.c.name)
             .join(users, users.c.id == jobs.c.user_id)
             .where(jobs.c.status == JobStatus.FAILED.value, _dead_lettered))
    if job_type:
        query = query.where(jobs.c.type == job_type)
    query = query.order_by(jobs.c.finished_at.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def failed_attempts(engine: Engine, limit: int = 20) -> List[Dict[str, Any]]:
    """The latest failed attempts (retried or failed for good) of the last day, newest first, with
    their error (the (kind, at) index)."""
    query = (select(job_events.c.job_id, job_events.c.kind, job_events.c.attempt, job_events.c.at,
                    job_events.c.detail, jobs.c.type)
             .join(jobs, jobs.c.id == job_events.c.job_id)
             .where(job_events.c.kind.in_(["retried", "failed"]), job_events.c.at >= utcnow() - timedelta(days=1))
             .order_by(job_events.c.at.desc()).limit(limit))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def failed_ids(engine: Engine, job_type: str, limit: int) -> List[str]:
    """Ids of failed jobs of ``job_type`` (the newest ``limit``): a "replay all of a type"."""
    query = (select(jobs.c.id).where(jobs.c.status == JobStatus.FAILED.value, jobs.c.type == job_type, _dead_lettered)
             .order_by(jobs.c.finished_at.desc()).limit(limit))
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def workers_seen(engine: Engine, within: timedelta = timedelta(minutes=10)) -> List[Dict[str, Any]]:
    """Workers that claimed a job lately: name (host:pid), last claim, claims in that time."""
    query = (select(job_events.c.actor, func.max(job_events.c.at).label("last"), func.count().label("claims"))
             .where(job_events.c.kind == "claimed", job_events.c.at >= utcnow() - within)
             .group_by(job_events.c.actor).order_by(func.max(job_events.c.at).desc()))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def find_job(engine: Engine, job_id: str) -> Optional[Dict[str, Any]]:
    """Any user's job (the dashboard is for admins), with its owner's name."""
    query = select(*[c for c in jobs.c if c.name != "args"], jobs.c.args, users.c.name.label("owner")).join(
        users, users.c.id == jobs.c.user_id).where(jobs.c.id == job_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else dict(row._mapping)
