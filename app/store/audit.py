"""The store's side of a delivery audit: given the ids a client was promised (202), what became
of each, and do the tables hold anything they must not (two result rows for one job, jobs left
`running`). Used by `flask --app app jobs audit` and the fault drills."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..states import JobStatus
from .schema import jobs, outbox, results
from .users import utcnow

TERMINAL = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}

# Ids per IN (...) query: far below every backend's parameter limit (MSSQL: 2100).
_CHUNK = 500


def _epoch(value: Optional[datetime]) -> Optional[float]:
    """Naive-UTC column value -> seconds since the epoch (comparable with a client's time.time())."""
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()


def audit_jobs(engine: Engine, ids: Iterable[str]) -> Dict[str, Any]:
    """Per id: status, attempts (claims; >1 on a job that cannot fail = a duplicate execution),
    created/started/finished (epoch seconds). Plus table-wide counts of result rows that share a
    job id and of jobs in `running`, and the age of every job still `queued` (``queued_ages``).
    Unknown ids are listed, not guessed."""
    wanted: List[str] = list(dict.fromkeys(ids))
    found: Dict[str, Dict[str, Any]] = {}
    cols = [jobs.c.id, jobs.c.type, jobs.c.status, jobs.c.attempts, jobs.c.created_at, jobs.c.started_at,
            jobs.c.finished_at]
    with engine.connect() as conn:
        for i in range(0, len(wanted), _CHUNK):
            for row in conn.execute(select(*cols).where(jobs.c.id.in_(wanted[i:i + _CHUNK]))):
                found[row.id] = {
                    "type": row.type,
                    "status": row.status,
                    "attempts": row.attempts,
                    "created": _epoch(row.created_at),
                    "started": _epoch(row.started_at),
                    "finished": _epoch(row.finished_at),
                }
        duplicate_rows = conn.execute(
            select(func.count()).select_from(
                select(results.c.job_id).group_by(results.c.job_id).having(func.count() > 1).subquery()
            )
        ).scalar_one()
        running_total = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
        ).scalar_one()
        # Every job still queued, table-wide (a client that lost its connection mid-submit never
        # got an id): how long since each last changed. The oldest first, bounded.
        now = utcnow()
        queued_ages = {r.id: round((now - r.updated_at).total_seconds(), 1) for r in conn.execute(
            select(jobs.c.id, jobs.c.updated_at).where(jobs.c.status == JobStatus.QUEUED.value)
            .order_by(jobs.c.updated_at).limit(_CHUNK))}
        # Messages written with an outcome but not yet acknowledged by Kafka (the outbox, drained by
        # the worker that wrote them or, once its lease runs out, by any other): 0 once settled.
        outbox_pending = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        result_ids = set()
        for i in range(0, len(wanted), _CHUNK):
            result_ids.update(conn.execute(
                select(results.c.job_id).where(results.c.job_id.in_(wanted[i:i + _CHUNK]))).scalars())
    counts: Dict[str, int] = {}
    for job in found.values():
        counts[job["status"]] = counts.get(job["status"], 0) + 1
        job["has_result"] = False
    for job_id in result_ids:
        found[job_id]["has_result"] = True
    return {
        "ids": len(wanted),
        "unknown": [i for i in wanted if i not in found],
        "status_counts": counts,
        "not_terminal": sorted(i for i, j in found.items() if j["status"] not in TERMINAL),
        "running": sorted(i for i, j in found.items() if j["status"] == JobStatus.RUNNING.value),
        "running_in_table": running_total,
        # results.job_id is the primary key, so this must be 0; counted, not assumed.
        "duplicate_result_rows": duplicate_rows,
        # A succeeded job without its result (or a result on a job that did not succeed).
        "result_mismatch": sorted(i for i, j in found.items()
                                  if j["has_result"] != (j["status"] == JobStatus.SUCCEEDED.value)),
        "jobs": found,
        "queued_ages": queued_ages,
        "outbox_pending": outbox_pending,
    }
