"""Job rows and results: every state change is one conditional UPDATE, so concurrent or repeated
callers (two workers, a redelivered message, a cancel racing a claim) cannot move a job backwards."""
from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from sqlalchemy import Integer, bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..states import JobStatus
from . import bulk, history
from .schema import idempotency_keys, jobs, results
from .users import utcnow

Row = Dict[str, Any]
T = TypeVar("T")

_JOB_COLUMNS = [c for c in jobs.c if c.name != "user_id"]
_ACTIVE = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]


class QuotaExceeded(Exception):
    """The user already has ``active`` jobs queued or running, the most allowed: nothing was stored."""

    def __init__(self, active: int) -> None:
        super().__init__("%d jobs queued or running" % active)
        self.active = active


def _row(row: Any) -> Row:
    data = dict(row._mapping)
    data["args"] = json.loads(data["args"])
    data["status"] = JobStatus(data["status"])
    return data


def _new_row(user_id: int, job_type: str, args: Dict[str, Any], now: Any) -> Dict[str, Any]:
    return dict(
        id=str(uuid.uuid4()),
        user_id=user_id,
        type=job_type,
        args=json.dumps(args, separators=(",", ":")),
        status=JobStatus.QUEUED.value,
        attempts=0,
        crashes=0,
        claim_attempt=0,
        created_at=now,
        updated_at=now,
    )


def _active(user_id: int, max_active: int) -> Any:
    """How many jobs the user has queued or running, counting at most ``max_active`` index
    entries (ix_jobs_user_status): the check costs what the quota allows, however many jobs the
    user has."""
    mine = select(jobs.c.user_id).where(jobs.c.user_id == user_id, jobs.c.status.in_(_ACTIVE)).limit(max_active)
    return select(func.count()).select_from(mine.subquery()).scalar_subquery()


def _built(values: Dict[str, Any], args: Dict[str, Any]) -> Row:
    # Built from what was written rather than read back: no round trip. (`seq` is not known.)
    row = {c.name: None for c in _JOB_COLUMNS}
    row.update(values, args=args, status=JobStatus.QUEUED)
    del row["user_id"]
    return row


_ADD_JOB = insert(jobs)


@functools.lru_cache(maxsize=None)
def _insert_within_quota(max_active: int, returning: bool) -> Any:
    """INSERT INTO jobs SELECT :values WHERE <the user's active jobs> < max_active (RETURNING the
    id, with ``returning``): the row's values and the user bound at each call, the statement built
    once (see _claim_statement). A statement built per call costs SQLAlchemy its cache key, a walk
    of the whole statement, every time: ~7 % of a submit's CPU (py-spy)."""
    cols = list(_new_row(0, "", {}, None))
    chosen = select(*[bindparam(c, type_=jobs.c[c].type) for c in cols]).where(
        _active(bindparam("quota_user", type_=jobs.c.user_id.type), max_active) < max_active)
    add = insert(jobs).from_select(cols, chosen)
    return add.returning(jobs.c.id) if returning else add


def create_job(engine: Engine, user_id: int, job_type: str, args: Dict[str, Any],
               max_active: Optional[int] = None) -> Row:
    """Insert a queued job and commit it: the row exists before the message is produced. With
    ``max_active``, a user who already has that many jobs queued or running gets QuotaExceeded
    instead: the check is part of the INSERT (INSERT ... SELECT ... WHERE count < max), one
    statement; concurrent submits of one user can overshoot the bound by at most their number."""
    values = _new_row(user_id, job_type, args, utcnow())
    # Autocommit: one statement is atomic by itself, so no BEGIN and COMMIT round trips. (The row
    # is the job's `submitted` step: app/store/history.py.)
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        if max_active is None:
            conn.execute(_ADD_JOB, values)
        else:
            values = dict(values, quota_user=user_id)
            if conn.dialect.insert_returning:
                # psycopg reports no rowcount (-1) for INSERT ... SELECT: ask for the row instead.
                inserted = conn.execute(_insert_within_quota(max_active, True), values).first() is not None
            else:
                inserted = conn.execute(_insert_within_quota(max_active, False), values).rowcount == 1
            if not inserted:
                raise QuotaExceeded(conn.execute(select(_active(user_id, max_active))).scalar_one())
    return _built(values, args)


#: How long an Idempotency-Key is remembered: a retry later than this makes new jobs.
IDEMPOTENCY_TTL = timedelta(hours=24)


class KeyReused(Exception):
    """An Idempotency-Key already used for a different request (another body)."""


def create_jobs(engine: Engine, user_id: int, specs: List[Tuple[str, Dict[str, Any]]],
                max_active: Optional[int] = None, idempotency_key: Optional[str] = None,
                request_hash: str = "") -> Tuple[List[Row], bool]:
    """Insert several queued jobs in ONE transaction (one multi-row INSERT), all or none: with
    ``max_active``, QuotaExceeded when they would take the user past it. With an
    ``idempotency_key`` the user used before (within IDEMPOTENCY_TTL) for the same request
    (``request_hash``), nothing is inserted: the jobs that request made are returned as they are
    now, and True (a replay); for another request, KeyReused. Returns (jobs, replayed)."""
    for _attempt in range(2):  # a second time only when a concurrent retry stored the key first
        try:
            return _create_jobs(engine, user_id, specs, max_active, idempotency_key, request_hash)
        except IntegrityError:
            if idempotency_key is None:
                raise
    raise RuntimeError("idempotency key %r: conflicting inserts" % idempotency_key)


def _create_jobs(engine: Engine, user_id: int, specs: List[Tuple[str, Dict[str, Any]]], max_active: Optional[int],
                 key: Optional[str], request_hash: str) -> Tuple[List[Row], bool]:
    now = utcnow()
    with engine.begin() as conn:
        if key is not None:
            known = conn.execute(select(idempotency_keys.c.request_hash, idempotency_keys.c.job_ids,
                                        idempotency_keys.c.created_at)
                                 .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)).first()
            if known is not None and known.created_at > now - IDEMPOTENCY_TTL:
                if known.request_hash != request_hash:
                    raise KeyReused(key)
                ids = json.loads(known.job_ids)
                found = {r["id"]: r for r in (_get(conn, i) for i in ids) if r is not None}
                return [found[i] for i in ids if i in found], True
            if known is not None:  # expired: the key is free again
                conn.execute(delete(idempotency_keys).where(idempotency_keys.c.user_id == user_id,
                                                            idempotency_keys.c.key == key))
        rows = [_new_row(user_id, job_type, args, now) for job_type, args in specs]
        if max_active is not None:
            active = conn.execute(select(_active(user_id, max_active))).scalar_one()
            if active + len(rows) > max_active:
                raise QuotaExceeded(active)
        if rows:
            bulk.insert_rows(conn, jobs, rows)
        if key is not None:
            conn.execute(insert(idempotency_keys).values(
                user_id=user_id, key=key, request_hash=request_hash, created_at=now,
                job_ids=json.dumps([r["id"] for r in rows])))
    return [_built(values, args) for values, (_t, args) in zip(rows, specs)], False


def not_enqueued(job: Row) -> bool:
    """A job Kafka never took (its submit was answered 503)."""
    return job["status"] is JobStatus.FAILED and (job.get("error") or "").startswith(NOT_ENQUEUED)


def forget_key(engine: Engine, user_id: int, key: str, job_ids: List[str]) -> None:
    """Free ``key`` when it still names the request that made ``job_ids``: none of them was
    taken by Kafka, and the client, told to try again, may do so with the same key."""
    with engine.begin() as conn:
        conn.execute(delete(idempotency_keys).where(idempotency_keys.c.user_id == user_id,
                                                    idempotency_keys.c.key == key,
                                                    idempotency_keys.c.job_ids == json.dumps(job_ids)))


def get_job(engine: Engine, job_id: str, user_id: Optional[int] = None) -> Optional[Row]:
    """The job, or None when unknown or owned by another user (callers answer both the same)."""
    with engine.connect() as conn:
        return _get(conn, job_id, user_id)


def _get(conn: Connection, job_id: str, user_id: Optional[int] = None) -> Optional[Row]:
    query = select(*_JOB_COLUMNS).where(jobs.c.id == job_id)
    if user_id is not None:
        query = query.where(jobs.c.user_id == user_id)
    row = conn.execute(query).first()
    return _row(row) if row else None


def list_jobs(
    engine: Engine, user_id: int, limit: int, status: Optional[str] = None, before: Optional[int] = None
) -> Tuple[List[Row], Optional[int]]:
    """A page of the user's jobs, newest first, and the cursor of the next page (None at the end)."""
    query = select(*_JOB_COLUMNS).where(jobs.c.user_id == user_id)
    if status:
        query = query.where(jobs.c.status == status)
    if before is not None:
        query = query.where(jobs.c.seq < before)
    query = query.order_by(jobs.c.seq.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [_row(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["seq"] if more and rows else None)


def _transition(conn: Connection, job_id: str, allowed: List[JobStatus], _attempts: Optional[int] = None,
                _step: Optional[Dict[str, Any]] = None, _uncancelled: bool = False, **values: Any) -> bool:
    """One conditional UPDATE: from one of ``allowed`` (and, with ``_attempts``, only while the
    job's attempts are still that many; with ``_uncancelled``, only while no cancel of it was
    requested) to ``values``. True if it applied; then ``_step`` (history.event fields but the job
    and the time) is appended to its history."""
    values["updated_at"] = now = utcnow()
    query = update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in allowed]))
    if _attempts is not None:
        query = query.where(jobs.c.attempts == _attempts)
    if _uncancelled:
        query = query.where(jobs.c.cancel_requested_at.is_(None))
    if conn.execute(query.values(**values)).rowcount != 1:
        return False
    if _step is not None:
        history.record(conn, [history.event(job_id, at=now, **_step)])
    return True


#: How the error of a job Kafka never took begins: never a dead letter (app/replay.py, the dashboard).
NOT_ENQUEUED = "not enqueued: "


def mark_enqueue_failed(engine: Engine, job_id: str, reason: str) -> bool:
    """Kafka did not take the job: it must not stay looking queued."""
    with engine.begin() as conn:
        return _transition(
            conn, job_id, [JobStatus.QUEUED], status=JobStatus.FAILED.value,
            error=NOT_ENQUEUED + reason, finished_at=utcnow(), _step={"kind": "failed", "detail": NOT_ENQUEUED + reason},
        )


def cancel_job(engine: Engine, job_id: str, user_id: int, actor: Optional[str] = None) -> Tuple[Optional[Row], str]:
    """Cancel a job of the user (``actor``: their name, for the history). A queued job is
    cancelled at once ("cancelled"); for a running one the request is recorded ("requested"):
    the job may see it (app/jobcontext.py), and its attempt ends `cancelled` when its run ends
    (its timeout ends it at the latest). Returns (job or None if unknown, what was done: those
    two, or "" for a job that is neither queued nor running, or whose cancel was asked before)."""
    with engine.begin() as conn:
        owned = conn.execute(
            select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.user_id == user_id)
        ).first()
        if owned is None:
            return None, ""
        done = ""
        if _transition(conn, job_id, [JobStatus.QUEUED], status=JobStatus.CANCELLED.value, finished_at=utcnow(),
                       _step={"kind": "cancelled", "actor": actor}):
            done = "cancelled"
        elif _transition(conn, job_id, [JobStatus.RUNNING], _uncancelled=True, cancel_requested_at=utcnow(),
                         _step={"kind": "cancel_requested", "actor": actor}):
            done = "requested"
    return get_job(engine, job_id), done


def cancel_requested(engine: Engine, job_id: str) -> bool:
    """Whether a cancel of the job was requested while it runs (a job asks through app/jobcontext.py)."""
    with engine.connect() as conn:
        return conn.execute(select(jobs.c.cancel_requested_at).where(jobs.c.id == job_id)).scalar() is not None


@functools.lru_cache(maxsize=None)
def _cancel_requested(as_array: bool, returning: bool) -> Any:
    """running -> cancelled for the listed jobs whose cancel was requested (app/store/bulk.py:
    the list as an array on PostgreSQL); built once per form."""
    stmt = update(jobs).where(
        bulk.id_in(jobs.c.id, "job_ids", as_array), jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.cancel_requested_at.isnot(None),
    ).values(status=JobStatus.CANCELLED.value, finished_at=bindparam("now", type_=jobs.c.updated_at.type),
             updated_at=bindparam("now", type_=jobs.c.updated_at.type))
    return stmt.returning(jobs.c.id) if returning else stmt


def cancel_requested_jobs(conn: Connection, job_ids: List[str], actor: Optional[str] = None,
                          detail: Optional[str] = None) -> List[str]:
    """running -> cancelled for those of ``job_ids`` whose cancel was requested while they ran: the
    end of their attempt (a success, a failure or a timeout) ends them. Returns those ids."""
    done: List[str] = []
    now = utcnow()
    as_array = bulk.arrays(conn)
    for ids in bulk.chunks(job_ids):
        if conn.dialect.update_returning:
            done.extend(conn.execute(_cancel_requested(as_array, True), {"job_ids": ids, "now": now}).scalars())
        else:
            for job_id in ids:  # one at a time, to know which
                if conn.execute(_cancel_requested(as_array, False), {"job_ids": [job_id], "now": now}).rowcount == 1:
                    done.append(job_id)
    history.record(conn, history.many(done, "cancelled", now, actor=actor,
                                      detail=detail or "cancel requested while it ran; its run ended"))
    return done


def _in_tx(bind: Union[Engine, Connection], work: Callable[[Connection], T]) -> T:
    """Run ``work`` in the caller's transaction (a Connection), or in a new one (an Engine): the
    worker puts a state change and its outbox rows in one transaction; tests and the API call
    these with an engine."""
    if isinstance(bind, Connection):
        return work(bind)
    with bind.begin() as conn:
        return work(conn)


@functools.lru_cache(maxsize=None)
def _claim_statement(by_attempt: bool, max_attempts: Optional[int]) -> Any:
    """The claim's UPDATE, built once per shape (building a statement costs more than running
    it: ~0.5 ms of Python here), with the job id, the message's attempt and the time bound at
    each call. See claim_job for the conditions."""
    running = jobs.c.status == JobStatus.RUNNING.value
    may_run = jobs.c.status == JobStatus.QUEUED.value
    running_again = running
    values: Dict[str, Any] = {}
    if by_attempt:
        attempt = bindparam("attempt", type_=Integer)
        may_run = may_run & (jobs.c.attempts == attempt - 1)
        running_again = running_again & (jobs.c.claim_attempt <= attempt)
        values["claim_attempt"] = attempt
    if max_attempts is not None:
        running_again = running_again & (jobs.c.attempts < max_attempts)
    now = bindparam("now", type_=jobs.c.updated_at.type)
    return update(jobs).where(jobs.c.id == bindparam("job_id", type_=jobs.c.id.type), may_run | running_again).values(
        status=JobStatus.RUNNING.value, attempts=jobs.c.attempts + 1, started_at=now, updated_at=now,
        # SET sees the row as it was: a claim of a `running` job counts a crash.
        crashes=jobs.c.crashes + case((running, 1), else_=0), **values,
    )


def claim_job(bind: Union[Engine, Connection], job_id: str, max_attempts: Optional[int] = None,
              attempt: Optional[int] = None, actor: Optional[str] = None,
              where: Optional[history.Where] = None) -> Optional[Row]:
    """queued|running -> running, counting the attempt. A job left `running` by a worker that died
    is claimed again (at-least-once), and that counts as a crash. Returns the job, or None if it
    is unknown or terminal. The claimed row's ``attempts`` is this claim's number: the attempt's
    outcome is stored only while no later claim has taken the job (requeue_job, store_failure).

    ``attempt`` is the message's attempt number. A `queued` job is claimed only by the message of
    its next attempt (attempts == attempt - 1); a `running` one only by the message behind its
    current claim or a newer one (a redelivery after a crash), never by an older attempt's.

    Not claimed, and said so in the returned row (both False for a claimed job):
    - ``exhausted``: with ``max_attempts``, a job still `running` that has used them all, found by
      its own claim's message again (its workers died running it every time; running it again
      would kill another): fail it;
    - ``stale``: the message is of an attempt that already ran (the job is queued for a later
      one, or a later one is running): skip it.

    A claim appends its `claimed` step (``actor``: the worker, ``where``: the record) in the same
    transaction: give a Connection in a transaction, or an Engine."""
    params: Dict[str, Any] = {"job_id": job_id, "attempt": attempt}

    def work(conn: Connection) -> Tuple[bool, Optional[Row]]:  # read back in the same transaction
        params["now"] = utcnow()
        claim = _claim_statement(attempt is not None, max_attempts)
        if conn.dialect.update_returning:  # PostgreSQL, SQL Server (OUTPUT), SQLite >= 3.35: one statement
            claimed = conn.execute(claim.returning(*_JOB_COLUMNS), params).first()
            if claimed is None:
                return False, _get(conn, job_id)  # not claimed (rare): why is in the row
            done, row = True, _row(claimed)
        else:
            done = conn.execute(claim, params).rowcount == 1
            row = _get(conn, job_id)
        if done and row is not None:
            history.record(conn, _claimed_steps(row, params["now"], actor, where))
        return done, row

    done, row = _in_tx(bind, work)
    if row is None or row["status"].terminal:
        return None
    older = attempt is not None and row["claim_attempt"] > attempt
    row["stale"] = not done and (row["status"] is JobStatus.QUEUED or older)
    row["exhausted"] = not done and row["status"] is JobStatus.RUNNING and not older
    return row


def _claimed_steps(job: Row, now: datetime, actor: Optional[str], where: Optional[history.Where]) -> List[Dict[str, Any]]:
    """A claim's `claimed` step; for the first claim of a job's first message, its `enqueued` step
    before it, from the record itself (where it is, and the time its producer gave it): no
    statement of its own on the submit's path."""
    crashes = job.get("crashes") or 0
    detail = None if not crashes else "its workers died running it %d time%s so far" % (crashes, "" if crashes == 1 else "s")
    steps = []
    if job["attempts"] == 1 and not crashes and where is not None:
        steps.append(history.event(job["id"], "enqueued", history.message_time(where, now), attempt=1, where=where))
    steps.append(history.event(job["id"], "claimed", now, attempt=job["attempts"], actor=actor, where=where,
                               detail=detail))
    return steps


#: The batch claim (claim_jobs): the queued half of claim_job's conditions, for many ids of one
#: attempt number. The status is compared through COALESCE (the same test: it is never NULL) so
#: that no database can look the rows up by status: during a burst, PostgreSQL's statistics still
#: said "few jobs queued" while 10,000 were, and it scanned every queued row through
#: ix_jobs_status_finished for each batch (30 ms per claim of 100, found with auto_explain) rather
#: than looking up the 100 ids. By id only, the claim is one index probe per job.
#: One statement per form of the id list (app/store/bulk.py: an array on PostgreSQL).
_CLAIM_MANY = {as_array: update(jobs).where(
    bulk.id_in(jobs.c.id, "job_ids", as_array), func.coalesce(jobs.c.status, "") == JobStatus.QUEUED.value,
    jobs.c.attempts == bindparam("attempt", type_=Integer) - 1,
).values(status=JobStatus.RUNNING.value, attempts=jobs.c.attempts + 1, claim_attempt=bindparam("attempt", type_=Integer),
         started_at=bindparam("now", type_=jobs.c.updated_at.type),
         updated_at=bindparam("now", type_=jobs.c.updated_at.type)).returning(*_JOB_COLUMNS) for as_array in (False, True)}


def _by_attempt(claims: List[Tuple[str, int]]) -> List[Tuple[int, List[str]]]:
    """(attempt, job ids) groups of ``claims``, each at most bulk.IN_LIST_MAX ids."""
    groups: Dict[int, List[str]] = {}
    for job_id, attempt in claims:
        groups.setdefault(attempt, []).append(job_id)
    return [(attempt, chunk) for attempt, ids in groups.items() for chunk in bulk.chunks(ids)]


def claim_jobs(conn: Connection, claims: List[Tuple[str, int]], actor: Optional[str] = None,
               where: Optional[Dict[str, history.Where]] = None) -> Dict[str, Row]:
    """Claim in one statement per attempt number (a batch has one or two; run them in one
    transaction, so that a failure claims none) those of ``claims``
    (job id, the message's attempt) that are queued for exactly that attempt: queued -> running,
    counting the attempt, as claim_job does. Returns the claimed rows by job id. Anything else
    (a job running already - its worker died -, finished, unknown, or of another attempt) is left
    alone, for claim_job to decide one record at a time. Empty where the store cannot return
    updated rows. Their `claimed` steps go in one INSERT (``where``: each job's record)."""
    if not claims or not conn.dialect.update_returning:
        return {}
    now = utcnow()
    claimed: Dict[str, Row] = {}
    for attempt, ids in _by_attempt(claims):
        for row in conn.execute(_CLAIM_MANY[bulk.arrays(conn)], {"job_ids": ids, "attempt": attempt, "now": now}):
            job = _row(row)
            job["stale"] = job["exhausted"] = False
            claimed[job["id"]] = job
    places = where or {}
    history.record(conn, [s for i, job in claimed.items() for s in _claimed_steps(job, now, actor, places.get(i))])
    return claimed


_RELEASE = {as_array: update(jobs).where(
    bulk.id_in(jobs.c.id, "job_ids", as_array), jobs.c.status == JobStatus.RUNNING.value,
    jobs.c.attempts == bindparam("attempt", type_=Integer),
    jobs.c.claim_attempt == bindparam("attempt", type_=Integer), jobs.c.cancel_requested_at.is_(None),
).values(status=JobStatus.QUEUED.value, attempts=jobs.c.attempts - 1, claim_attempt=jobs.c.claim_attempt - 1,
         updated_at=bindparam("now", type_=jobs.c.updated_at.type)).returning(jobs.c.id) for as_array in (False, True)}


def release_jobs(conn: Connection, claims: List[Tuple[str, int]], actor: Optional[str] = None) -> int:
    """Undo claim_jobs for jobs claimed but never run (the batch ended early: a stop request, its
    time bound, a paused partition): running -> queued, the attempt not counted, so their records,
    fetched again, claim them as if nothing happened. Only while the claim is still that one. A
    job whose cancel was requested meanwhile is cancelled instead (it never ran). Returns how many
    were released or cancelled."""
    released: List[Dict[str, Any]] = []
    now = utcnow()
    for attempt, ids in _by_attempt(claims):
        done = list(conn.execute(_RELEASE[bulk.arrays(conn)], {"job_ids": ids, "attempt": attempt, "now": now}).scalars())
        released.extend(history.many(done, "released", now, attempt=attempt, actor=actor,
                                     detail="claimed with its batch, not run: attempt not counted"))
    history.record(conn, released)
    gone = {r["job_id"] for r in released}
    cancelled = cancel_requested_jobs(conn, [i for i, _a in claims if i not in gone], actor,
                                      detail="cancel requested before its run began")
    return len(released) + len(cancelled)


# The success path's statements, built once (see _claim_statement).
# A job whose cancel was requested while it ran does not succeed: it ends cancelled
# (cancel_requested_jobs), whatever its run returned.
_SUCCEED = update(jobs).where(jobs.c.id == bindparam("job_id", type_=jobs.c.id.type),
                              jobs.c.status == JobStatus.RUNNING.value, jobs.c.cancel_requested_at.is_(None)).values(
    status=JobStatus.SUCCEEDED.value, error=None, finished_at=bindparam("now", type_=jobs.c.updated_at.type),
    updated_at=bindparam("now", type_=jobs.c.updated_at.type))
_ADD_RESULT = insert(results)


def store_success(bind: Union[Engine, Connection], job_id: str, result_json: str, actor: Optional[str] = None) -> bool:
    """running -> succeeded and the result row (``result_json``: the result already serialised,
    strictly), in ONE transaction. Any delivery's success counts (the job is done); False if the
    job was no longer running (another delivery finished it first): then nothing is written."""
    def work(conn: Connection) -> bool:
        now = utcnow()
        if conn.execute(_SUCCEED, {"job_id": job_id, "now": now}).rowcount != 1:
            return False
        conn.execute(_ADD_RESULT, {"job_id": job_id, "result": result_json, "created_at": now})
        history.record(conn, [history.event(job_id, "succeeded", now, actor=actor)])
        return True

    return _in_tx(bind, work)


_SUCCEED_MANY = {as_array: update(jobs).where(bulk.id_in(jobs.c.id, "job_ids", as_array),
                                               jobs.c.status == JobStatus.RUNNING.value,
                                               jobs.c.cancel_requested_at.is_(None)).values(
    status=JobStatus.SUCCEEDED.value, error=None, finished_at=bindparam("now", type_=jobs.c.updated_at.type),
    updated_at=bindparam("now", type_=jobs.c.updated_at.type)).returning(jobs.c.id) for as_array in (False, True)}


def store_successes(conn: Connection, outcomes: List[Tuple[str, str]], actor: Optional[str] = None) -> List[str]:
    """store_success for many jobs ((job id, result JSON) each) in the caller's transaction: one
    UPDATE for all, and one INSERT of the result rows of those it moved. Returns the ids that
    succeeded now (the others were no longer running: another delivery finished them). Needs a
    store that returns updated rows (see claim_jobs)."""
    if not outcomes:
        return []
    now = utcnow()
    applied = set()
    for ids in bulk.chunks([i for i, _r in outcomes]):
        applied.update(conn.execute(_SUCCEED_MANY[bulk.arrays(conn)], {"job_ids": ids, "now": now}).scalars())
    rows = [{"job_id": i, "result": r, "created_at": now} for i, r in outcomes if i in applied]
    if rows:
        bulk.insert_rows(conn, results, rows)
        history.record(conn, history.many([r["job_id"] for r in rows], "succeeded", now, actor=actor))
    return [i for i, _r in outcomes if i in applied]


def requeue_job(bind: Union[Engine, Connection], job_id: str, attempt: int, error: str,
                delay: Optional[float] = None, actor: Optional[str] = None) -> bool:
    """running -> queued after failed attempt ``attempt``, keeping its error, until the retry is
    due (in ``delay`` seconds). Only while that attempt is the job's latest claim: when another
    delivery claimed the job meanwhile, that one decides (False, nothing written). Never for a job
    whose cancel was requested (False: see cancel_requested_jobs)."""
    detail = error if delay is None else "%s; retry in %.1f s" % (error, delay)
    step = {"kind": "retried", "attempt": attempt, "actor": actor, "detail": detail}
    return _in_tx(bind, lambda conn: _transition(conn, job_id, [JobStatus.RUNNING], status=JobStatus.QUEUED.value,
                                                 error=error, _attempts=attempt, _step=step, _uncancelled=True))


def store_failure(bind: Union[Engine, Connection], job_id: str, error: str, attempt: Optional[int] = None,
                  crashed: bool = False, actor: Optional[str] = None, uncancelled: bool = False) -> bool:
    """running -> failed: attempts used up, or the job can never succeed; with ``attempt``, only
    while that claim is the job's latest (see requeue_job). ``crashed``: the job was given up
    because its workers kept dying, and this delivery found it running once more (a crash)."""
    extra: Dict[str, Any] = {"crashes": jobs.c.crashes + 1} if crashed else {}
    step = {"kind": "failed", "attempt": attempt, "actor": actor, "detail": error}
    return _in_tx(bind, lambda conn: _transition(conn, job_id, [JobStatus.RUNNING], status=JobStatus.FAILED.value,
                                                 error=error, finished_at=utcnow(), _attempts=attempt, _step=step,
                                                 _uncancelled=uncancelled, **extra))


def settle_stranded(bind: Union[Engine, Connection], job_id: str, attempts: int, cutoff: datetime) -> bool:
    """For the sweep: a job still queued after ``attempts``, unchanged since before ``cutoff``, is
    marked as looked at (its message is sent again). Conditional on all of that: of two sweeping
    workers, one settles a job."""
    def work(conn: Connection) -> bool:
        now = utcnow()
        if conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value, jobs.c.attempts == attempts,
                jobs.c.updated_at < cutoff).values(updated_at=now)).rowcount != 1:
            return False
        history.record(conn, [history.event(job_id, "resent", now, attempt=attempts + 1, actor="sweep",
                                            detail="queued with no message anywhere: sent again")])
        return True

    return _in_tx(bind, work)


def reject_job(bind: Union[Engine, Connection], job_id: str, error: str) -> bool:
    """queued|running -> failed: its message could not be processed at all (not valid, or the
    worker could not handle it). A finished job is left as it is."""
    return _in_tx(bind, lambda conn: _transition(conn, job_id, [JobStatus.QUEUED, JobStatus.RUNNING],
                                                 status=JobStatus.FAILED.value, error=error, finished_at=utcnow(),
                                                 _step={"kind": "failed", "detail": error}))


def get_result_json(engine: Engine, job_id: str) -> Optional[str]:
    """The stored result as its JSON text (None when there is none)."""
    with engine.connect() as conn:
        return conn.execute(select(results.c.result).where(results.c.job_id == job_id)).scalar()


def get_result(engine: Engine, job_id: str) -> Optional[Any]:
    raw = get_result_json(engine, job_id)
    return None if raw is None else json.loads(raw)


def replay_job(engine: Engine, job_id: str, actor: str) -> Tuple[Optional[Row], bool]:
    """failed -> queued with a fresh attempt budget (a dead letter sent again), its `replayed` step
    naming ``actor`` and the error it had, in one transaction. Returns (the job as it is now, or
    None if unknown; whether it was replayed): a job that is not failed - replayed already, say -
    is left as it is, so replaying twice is harmless."""
    with engine.begin() as conn:
        before = _get(conn, job_id)
        if before is None:
            return None, False
        done = before["status"] is JobStatus.FAILED and _transition(
            conn, job_id, [JobStatus.FAILED], status=JobStatus.QUEUED.value, attempts=0, crashes=0, claim_attempt=0,
            error=None, started_at=None, finished_at=None, cancel_requested_at=None,
            _step={"kind": "replayed", "actor": actor,
                   "detail": "fresh attempt budget; it had failed after %d attempts: %s" % (
                       before["attempts"], before["error"])})
        return (_get(conn, job_id) if done else before), done
