"""Which pooled connections are checked before use (app/store/db.py): on PostgreSQL only those that
sat idle (the real-server behaviour is tests/integration/test_pool_ping.py); on SQL Server every
checkout, since a dead pymssql connection fails its switch to AUTOCOMMIT with an error SQLAlchemy
does not recognise as a disconnect (it would be a 500, not a 503)."""
from sqlalchemy import event

from app.store import db as store_db
from app.store import make_engine


def test_postgresql_checks_idle_connections_only():
    engine = make_engine("postgresql+psycopg://u:p@127.0.0.1:1/x")
    assert engine.pool._pre_ping is False
    assert event.contains(engine, "checkin", store_db._note_checkin)


def test_sql_server_checks_every_checkout():
    engine = make_engine("mssql+pymssql://u:p@127.0.0.1:1/x")
    assert engine.pool._pre_ping is True
    assert not event.contains(engine, "checkin", store_db._note_checkin)
