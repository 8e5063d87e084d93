"""The pool checks a connection before handing it out only when it sat idle (app/store/db.py): a
connection whose server side went away while it waited is replaced unseen; one in steady use is
not checked (the round trip per request that pool_pre_ping cost)."""
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.store import db as store_db
from app.store import make_engine


def _backend_pid(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _kill(url, pid):
    killer = make_engine(url)
    try:
        with killer.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    finally:
        killer.dispose()
    time.sleep(0.2)  # the backend is gone once the server has reaped it


@pytest.fixture
def pg_url(postgres):
    return postgres.new_database()


def test_an_idle_connection_killed_server_side_is_replaced_before_use(pg_url, monkeypatch):
    monkeypatch.setattr(store_db, "PING_IDLE_SECONDS", 0.1)
    engine = make_engine(pg_url)
    try:
        first = _backend_pid(engine)
        _kill(pg_url, first)  # the pooled connection's server process is gone; it waits > 0.1 s
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
        assert _backend_pid(engine) != first
        time.sleep(0.2)
        # A connection that passed its ping is as it was: the API's one-statement INSERT runs it
        # in autocommit, which a connection left in a transaction refuses.
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged(pg_url, monkeypatch):
    monkeypatch.setattr(store_db, "PING_IDLE_SECONDS", 60)
    engine = make_engine(pg_url)
    try:
        # Without a ping, a connection killed while in steady use fails its next statement once
        # (a disconnect: SQLAlchemy then replaces the pool's connections), and the next one works.
        _kill(pg_url, _backend_pid(engine))
        with pytest.raises(OperationalError):
            _backend_pid(engine)
        assert _backend_pid(engine) > 0
    finally:
        engine.dispose()
