"""Engines for the three supported stores, and the Flask glue that puts one on the app.

- SQLite (embedded default): WAL + busy timeout, because gunicorn workers and the job worker
  write the same file from several processes.
- PostgreSQL via psycopg 3: tested here against a real server.
- MS SQL Server via pymssql: the seed's production store. Thin on purpose: the only special
  case is the gevent wait callback, without which every query blocks all of a gevent worker's
  greenlets. It cannot be run on this project's CI machines.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

log = logging.getLogger(__name__)


def _prepare_sqlite(url: str) -> None:
    """Create the database file's folder: `make run` must work from a fresh clone."""
    database = make_url(url).database
    if database and database != ":memory:":
        folder = os.path.dirname(os.path.abspath(database))
        os.makedirs(folder, exist_ok=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _install_pymssql_gevent_callback() -> None:
    """Let other greenlets run while pymssql waits on the server (only when gevent has patched us)."""
    if "gevent" not in sys.modules:
        return
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return
    import pymssql
    from gevent.socket import wait_read

    pymssql.set_wait_callback(wait_read)
    log.info("pymssql: gevent wait callback installed")


#: SQL Server errors that are about the data, not the server, though pymssql raises most server
#: errors as OperationalError: truncation (8152, 2628), conversion (245, 241, 8114), overflow (8115),
#: NULL into NOT NULL (515), constraint/key violations (547, 2601, 2627).
MSSQL_DATA_ERRORS = frozenset({8152, 2628, 245, 241, 8114, 8115, 515, 547, 2601, 2627})


def store_unavailable(exc: BaseException) -> bool:
    """Whether a store error means "the database is down or unreachable now" (worth trying again
    later) rather than "this statement can never succeed" (bad data: trying again would stall).
    Connection-level errors only: OperationalError (refused, terminated, locked), InterfaceError,
    a pool timeout, or any driver error that invalidated the connection - less SQL Server's data
    errors, which its driver reports as OperationalError too."""
    if isinstance(exc, DBAPIError) and _mssql_error_number(exc) in MSSQL_DATA_ERRORS:
        return False
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, SATimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _mssql_error_number(exc: DBAPIError) -> Optional[int]:
    """pymssql's errors carry (number, message) in args; None for any other driver."""
    orig = exc.orig
    if type(orig).__module__.split(".")[0] not in ("pymssql", "_mssql"):
        return None
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


#: A pooled connection unused this long is checked with a round trip before it is handed out.
#: SQLAlchemy's pool_pre_ping checks every checkout: one more round trip per request, which cost
#: ~10 % of a single submit's CPU on PostgreSQL (make bench). A connection in steady use is not
#: checked: if the server went away since its last use (a restart within the last second), that one
#: statement fails - a 503 for a submit, a retry for a worker - and SQLAlchemy, seeing a disconnect,
#: replaces every connection of the pool (the drills' database restart: a few refused submits,
#: nothing lost). Connections that waited out a restart are checked first. SQL Server: every checkout.
PING_IDLE_SECONDS = 1.0


def _note_checkin(_dbapi_conn: Any, record: Any) -> None:
    if record is not None:
        record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dialect: Any) -> Any:
    """Pessimistic disconnect handling, for idle connections only (PING_IDLE_SECONDS): the
    dialect's own ping, as pool_pre_ping does (psycopg's leaves the connection as it found it;
    a plain SELECT would leave it in a transaction, and an AUTOCOMMIT statement then fails)."""

    def check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool discards this connection and checks out another (up to three times).
            raise DisconnectionError("pooled connection failed its ping: %s" % exc.__class__.__name__) from exc

    return check


#: The pool of a server database (PostgreSQL, SQL Server), per process.
_POOL = dict(pool_size=5, max_overflow=5, pool_timeout=10)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the per-backend settings above."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        _prepare_sqlite(url)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "mssql":
        # SQL Server keeps the ping on every checkout: switching a pymssql connection to AUTOCOMMIT
        # (the submit's INSERT) talks to the server, and on a dead connection raises an error
        # SQLAlchemy does not wrap (a 500, not a 503), so the connection must be known good first.
        _install_pymssql_gevent_callback()
        return create_engine(url, pool_pre_ping=True, **_POOL)
    engine = create_engine(url, **_POOL)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle(engine.dialect))
    return engine


class Database:
    """Holds the engine; attaches to a Flask app with ``init_app`` (engine created lazily, after fork)."""

    def __init__(self, url: Optional[str] = None) -> None:
        self.url = url
        self._engine: Optional[Engine] = None
        self._pid: Optional[int] = None

    def init_app(self, app: Any) -> None:
        self.url = app.config["DATABASE_URL"]
        app.extensions["joblab_db"] = self

    @property
    def engine(self) -> Engine:
        # A pool inherited across fork (gunicorn preload_app) shares sockets between processes.
        if self._engine is None or self._pid != os.getpid():
            if self.url is None:
                raise RuntimeError("Database has no URL; call init_app first")
            self._engine = make_engine(self.url)
            self._pid = os.getpid()
        return self._engine

    def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
