"""app/store/bulk.py on every store: rows inserted by insert_rows read back as written (NULLs,
bytes, times, every column type the batch tables have), RETURNING gives each row's id, an id
list selects exactly its rows, and on PostgreSQL the SQL text sent is the same whatever the number
of rows or ids (the point of the module: one statement for psycopg's cache and the server's
prepared plans)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import List

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import DBAPIError

from app.store import bulk, make_engine
from app.store.schema import job_events, jobs, outbox
from app.store.users import issue_token


@pytest.fixture()
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def sent_sql(engine) -> List[str]:
    """The statements the driver gets from now on."""
    seen: List[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(sql))
    return seen


def event_rows(n: int) -> List[dict]:
    at = datetime(2026, 11, 29, 23, 30, 0, 123000)
    return [{"job_id": str(uuid.uuid4()), "kind": "claimed", "at": at, "attempt": i if i % 3 else None,
             "actor": "host:%d" % i, "kafka_topic": None if i % 2 else "jobs", "kafka_partition": i % 4,
             "kafka_offset": 2 ** 40 + i, "detail": None if i % 5 else "d\u00e9tail %d" % i} for i in range(n)]


def test_inserted_rows_read_back_as_written(engine):
    rows = event_rows(37)
    with engine.begin() as conn:
        bulk.insert_rows(conn, job_events, rows)
    cols = [job_events.c[k] for k in rows[0]]
    with engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(select(*cols).order_by(job_events.c.seq))]
    assert got == rows


def test_returning_gives_each_rows_id(engine):
    at = datetime(2026, 11, 29, 23, 30, 1)
    rows = [{"topic": "t", "key": "k%d" % i, "value": None if i == 2 else bytes([0xFF, i]), "headers": "h%d" % i,
             "job_id": None, "owner": "me", "lease_until": at, "created_at": at} for i in range(5)]
    with engine.begin() as conn:
        ids = {h: i for i, h in bulk.insert_rows(conn, outbox, rows, ("id", "headers"))}
    assert set(ids) == {r["headers"] for r in rows}
    with engine.connect() as conn:
        stored = {r.id: (r.headers, r.value) for r in conn.execute(select(outbox.c.id, outbox.c.headers, outbox.c.value))}
    assert stored == {ids[r["headers"]]: (r["headers"], r["value"]) for r in rows}


def test_an_id_list_selects_exactly_its_rows(engine):
    user = issue_token(engine, "bulk-%s" % uuid.uuid4().hex[:6])[0]
    now = datetime(2026, 11, 29, 23, 30, 2)
    rows = [{"id": str(uuid.uuid4()), "user_id": user, "type": "noop", "args": "{}", "status": "queued",
             "attempts": 0, "crashes": 0, "claim_attempt": 0, "created_at": now, "updated_at": now} for _ in range(6)]
    with engine.begin() as conn:
        bulk.insert_rows(conn, jobs, rows)
        as_array = bulk.arrays(conn)
        chosen = [rows[1]["id"], rows[4]["id"], "no-such-job"]
        conn.execute(update(jobs).where(bulk.id_in(jobs.c.id, "ids", as_array)).values(status="running"),
                     {"ids": chosen})
        states = dict(conn.execute(select(jobs.c.id, jobs.c.status)).all())
    assert {i for i, s in states.items() if s == "running"} == {rows[1]["id"], rows[4]["id"]}


def test_postgresql_gets_one_statement_whatever_the_count(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("array parameters are PostgreSQL's; other stores keep IN lists and executemany")
    seen = sent_sql(engine)
    for n in (2, 9, 150):
        with engine.begin() as conn:
            bulk.insert_rows(conn, job_events, event_rows(n))
            conn.execute(update(job_events).where(bulk.id_in(job_events.c.job_id, "ids", True)).values(detail="x"),
                         {"ids": [str(uuid.uuid4()) for _ in range(n)]})
    inserts = {s for s in seen if s.startswith("INSERT")}
    updates = {s for s in seen if s.startswith("UPDATE")}
    assert len(inserts) == 1 and len(updates) == 1, seen
    assert "unnest" in inserts.pop() and "ANY" in updates.pop()


def test_an_over_long_value_is_refused_not_cut(engine):
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    rows = event_rows(3)
    rows[1]["kind"] = "k" * 30  # the column is VARCHAR(24)
    with pytest.raises(DBAPIError):
        with engine.begin() as conn:
            bulk.insert_rows(conn, job_events, rows)
    with engine.connect() as conn:
        assert conn.execute(select(job_events.c.kind)).scalars().all() == []


def test_an_over_long_id_matches_nothing(engine):
    user = issue_token(engine, "bulk-%s" % uuid.uuid4().hex[:6])[0]
    now = datetime(2026, 11, 29, 23, 30, 3)
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        bulk.insert_rows(conn, jobs, [{"id": job_id, "user_id": user, "type": "noop", "args": "{}", "status": "queued",
                                       "attempts": 0, "crashes": 0, "claim_attempt": 0, "created_at": now,
                                       "updated_at": now}])
        found = conn.execute(select(jobs.c.id).where(bulk.id_in(jobs.c.id, "ids", bulk.arrays(conn))),
                             {"ids": [job_id + "-and-more"]}).scalars().all()
    assert found == []
