"""The worker's outbox: Kafka messages decided in a store transaction, published after it.

A worker writes the messages an outcome implies (a retry, a status event, a dead letter) in the
same transaction as the job's state change, then publishes them and deletes the rows. So a
message exists if and only if the state change happened: no `failed` event for a job another
delivery finished, no second dead letter when the store failed after the first. Each row is
leased to the worker that wrote it; rows whose lease ran out (their worker died, or Kafka was
down longer than the lease), and rows of a writer seen dead on its own host (worker/owner.py),
are taken over by another worker with a conditional UPDATE, so one
worker at a time publishes a row; each message carries a `message-id` header, by which the new
owner tells whether the dead writer published it before its delete (app/published.py)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta, timezone
from typing import Any, Iterable, List, Optional, Set, Tuple

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from ..published import MESSAGE_ID
from . import bulk
from .schema import outbox
from .users import utcnow

Headers = List[Tuple[str, bytes]]


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: Optional[bytes]
    headers: Headers = field(default_factory=list)
    job_id: Optional[str] = None
    #: When its outbox row was written (epoch seconds); 0 before that.
    written_at: float = 0.0


def add(conn: Connection, owner: str, messages: Iterable[Message], lease_seconds: float) -> List[Tuple[int, Message]]:
    """Insert ``messages`` leased to ``owner``; each with its row id, in order, as it is to be
    published: with a ``message-id`` header (app/published.py), by which a message that may have
    gone out already (its writer died before deleting the row) is looked for before it is sent again."""
    now = utcnow()
    written = now.replace(tzinfo=timezone.utc).timestamp()
    stamped, params = [], []
    for m in messages:
        m = replace(m, headers=list(m.headers) + [(MESSAGE_ID, uuid.uuid4().hex.encode())], written_at=written)
        headers = json.dumps([[name, value.decode("utf-8", "replace")] for name, value in m.headers])
        stamped.append(m)
        params.append(dict(topic=m.topic, key=m.key, value=m.value, headers=headers, job_id=m.job_id, owner=owner,
                           lease_until=now + timedelta(seconds=lease_seconds), created_at=now))
    if len(params) > 1 and (bulk.arrays(conn) or conn.dialect.insert_executemany_returning):
        # Many rows (a batch's outcomes): one INSERT; each id found by its row's headers (its
        # message-id makes them unique), whatever order the store returns them in.
        ids = {headers: row_id for row_id, headers in bulk.insert_rows(conn, outbox, params, ("id", "headers"))}
        return [(ids[p["headers"]], m) for p, m in zip(params, stamped)]
    return [(conn.execute(_ADD, p).inserted_primary_key[0], m) for p, m in zip(params, stamped)]


#: Built once: building a statement costs more than running it (see app/store/jobs.py).
_ADD = insert(outbox)
#: Per form of the id list (app/store/bulk.py: an array on PostgreSQL).
_REMOVE = {as_array: delete(outbox).where(bulk.id_in(outbox.c.id, "ids", as_array)) for as_array in (False, True)}


def remove(conn: Connection, ids: Iterable[int]) -> None:
    """Delete published rows."""
    for chunk in bulk.chunks(list(ids)):
        conn.execute(_REMOVE[bulk.arrays(conn)], {"ids": chunk})


def renew(engine: Engine, owner: str, ids: Iterable[int], lease_seconds: float) -> Set[int]:
    """Extend ``owner``'s lease on ``ids``; the ids it still holds (another worker may have taken
    over a row whose lease ran out: that one is no longer ours to publish)."""
    ids = list(ids)
    if not ids:
        return set()
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id.in_(ids), outbox.c.owner == owner).values(
            lease_until=utcnow() + timedelta(seconds=lease_seconds)))
        return set(conn.execute(select(outbox.c.id).where(outbox.c.id.in_(ids), outbox.c.owner == owner)).scalars())


def take_abandoned(engine: Engine, owner: str, lease_seconds: float, limit: int = 100) -> List[Tuple[int, Message]]:
    """Rows whose lease ran out, now leased to ``owner`` (at most ``limit``)."""
    with engine.begin() as conn:
        # Never our own rows: their writer (us) still has them to publish.
        candidates = list(conn.execute(select(outbox.c.id).where(outbox.c.lease_until < utcnow(),
                                                                 outbox.c.owner != owner)
                                       .order_by(outbox.c.id).limit(limit)).scalars())
        return take(conn, candidates, owner, lease_seconds)


def take(conn: Connection, ids: List[int], owner: str, lease_seconds: float) -> List[Tuple[int, Message]]:
    """Lease to ``owner`` those of ``ids`` whose lease has run out, and return them. Conditional:
    of two workers that picked the same rows, the second finds a fresh lease and takes nothing."""
    if not ids:
        return []
    now = utcnow()
    conn.execute(update(outbox).where(outbox.c.id.in_(ids), outbox.c.lease_until < now).values(
        owner=owner, lease_until=now + timedelta(seconds=lease_seconds)))
    return _leased(conn, ids, owner, now)


def owners(engine: Engine, owner: str) -> Set[str]:
    """The owners, other than ``owner``, of rows still leased (for take_from_dead)."""
    with engine.begin() as conn:
        return set(conn.execute(select(outbox.c.owner).distinct().where(outbox.c.owner != owner,
                                                                       outbox.c.lease_until >= utcnow())).scalars())


def take_from_dead(engine: Engine, owner: str, dead: Iterable[str], lease_seconds: float, quiet_seconds: float,
                   limit: int = 100) -> List[Tuple[int, Message]]:
    """Rows of the ``dead`` owners (writers known to be dead: worker/owner.py) untouched for
    ``quiet_seconds`` (written or renewed that long ago: their lease, of ``lease_seconds`` as ours,
    has that little left), now leased to ``owner`` (at most ``limit``). Conditional on the owner,
    so of two workers that found the same dead writer, the second takes nothing."""
    dead = list(dead)
    if not dead:
        return []
    with engine.begin() as conn:
        quiet_since = utcnow() + timedelta(seconds=lease_seconds - quiet_seconds)
        ids = list(conn.execute(select(outbox.c.id).where(outbox.c.owner.in_(dead),
                                                          outbox.c.lease_until < quiet_since)
                                .order_by(outbox.c.id).limit(limit)).scalars())
        if not ids:
            return []
        now = utcnow()
        conn.execute(update(outbox).where(outbox.c.id.in_(ids), outbox.c.owner.in_(dead)).values(
            owner=owner, lease_until=now + timedelta(seconds=lease_seconds)))
        return _leased(conn, ids, owner, now)


def _leased(conn: Connection, ids: List[int], owner: str, now: Any) -> List[Tuple[int, Message]]:
    """Those of ``ids`` leased to ``owner`` after ``now``, as (row id, message), oldest first."""
    rows = conn.execute(select(outbox).where(outbox.c.id.in_(ids), outbox.c.owner == owner,
                                             outbox.c.lease_until > now).order_by(outbox.c.id)).all()
    return [(r.id, Message(r.topic, r.key, r.value,
                           [(name, value.encode("utf-8")) for name, value in json.loads(r.headers or "[]")],
                           r.job_id, r.created_at.replace(tzinfo=timezone.utc).timestamp())) for r in rows]


def pending_jobs(conn: Connection, job_ids: Iterable[str]) -> Set[str]:
    """Which of ``job_ids`` still have messages waiting in the outbox."""
    ids = list(job_ids)
    if not ids:
        return set()
    return set(conn.execute(select(outbox.c.job_id).where(outbox.c.job_id.in_(ids))).scalars())
