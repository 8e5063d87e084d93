"""Each job's life, append-only: a row per step (submitted, enqueued, claimed - attempt N, by which
worker, from which partition and offset -, retried, succeeded, failed, cancelled, replayed...).

Rows are written by the store functions that change a job's state (app/store/jobs.py), in the
same transaction and, for many jobs, in the same multi-row INSERT: a step is recorded if and only
if it happened. No step costs the submit path a statement of its own: `submitted` is the job's
row itself (its created_at; ``events_of`` lists it first), and `enqueued` is written with the
first claim, from the record the worker read (its topic, partition, offset and the time its
producer gave it)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from . import bulk
from .schema import job_events, jobs

#: Every kind of step, in the order a job usually meets them.
EVENTS = (
    "submitted",  # the row was made (queued)
    "enqueued",  # Kafka acknowledged its message (topic, partition, offset)
    "resent",  # the sweep found it stranded (no message anywhere) and sent it again
    "claimed",  # a worker took it: attempt N, actor = worker, where = the record
    "released",  # claimed with a batch but not run (the batch ended early): queued again, attempt not counted
    "retried",  # an attempt failed; detail: the error and the delay
    "succeeded",
    "failed",  # detail: why
    "cancel_requested",  # a cancel of a running job: the job may look; its attempt ends cancelled
    "cancelled",
    "replayed",  # a dead letter sent again with a fresh attempt budget; actor: who
)

#: Where a record was: (topic, partition, offset), and maybe its timestamp (epoch ms) after them.
Where = Tuple[Any, ...]

#: Steps of the same millisecond are shown in this order (then as written).
_RANK = {"submitted": 0, "enqueued": 1}

#: Longest detail kept (errors can be long; the job row keeps the latest in full).
DETAIL_MAX = 2000


def event(job_id: str, kind: str, at: datetime, attempt: Optional[int] = None, actor: Optional[str] = None,
          where: Optional[Where] = None, detail: Optional[str] = None) -> Dict[str, Any]:
    """One row (every key present, so that many go in one executemany INSERT)."""
    topic, partition, offset = where[:3] if where is not None else (None, None, None)
    return {"job_id": job_id, "kind": kind, "at": at, "attempt": attempt,
            "actor": None if actor is None else actor[:128],
            "kafka_topic": topic, "kafka_partition": partition, "kafka_offset": offset,
            "detail": None if detail is None else detail[:DETAIL_MAX]}


def record(conn: Connection, rows: Sequence[Dict[str, Any]]) -> None:
    """Append ``rows`` (built by ``event``) in the caller's transaction: one statement."""
    if rows:
        bulk.insert_rows(conn, job_events, rows)


_COLUMNS = [c for c in job_events.c if c.name != "job_id"]


def events_of(engine: Engine, job_id: str) -> List[Dict[str, Any]]:
    """The job's steps, oldest first (by time, then as written), starting with `submitted` (the
    job's row); [] for an unknown job."""
    query = select(*_COLUMNS).where(job_events.c.job_id == job_id).order_by(job_events.c.seq)
    with engine.connect() as conn:
        created = conn.execute(select(jobs.c.created_at).where(jobs.c.id == job_id)).scalar()
        if created is None:
            return []
        rows = [dict(r._mapping) for r in conn.execute(query)]
    rows.append(dict(event(job_id, "submitted", created), seq=0))
    return sorted(rows, key=lambda r: (r["at"], _RANK.get(r["kind"], 2), r["seq"]))


def message_time(where: Optional[Where], default: datetime) -> datetime:
    """The timestamp a producer gave a message (``where``'s fourth item, epoch ms), as the store
    keeps times (naive UTC, whole ms); ``default`` when there is none."""
    if where is None or len(where) < 4 or not isinstance(where[3], int) or where[3] <= 0:
        return default
    return datetime.fromtimestamp(where[3] / 1000.0, timezone.utc).replace(tzinfo=None, microsecond=(
        where[3] % 1000) * 1000)


def where_of(record: Any) -> Optional[Where]:
    """A Kafka record's place, and the time its producer gave it (epoch ms, when it has one), for
    its `enqueued` and `claimed` rows."""
    try:
        place = (record.topic, int(record.partition), int(record.offset))
    except (AttributeError, TypeError, ValueError):
        return None
    stamp = getattr(record, "timestamp", None)
    return place + (stamp,) if isinstance(stamp, int) and stamp > 0 else place


def many(job_ids: Iterable[str], kind: str, at: datetime, **fields: Any) -> List[Dict[str, Any]]:
    return [event(job_id, kind, at, **fields) for job_id in job_ids]
