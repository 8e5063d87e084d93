"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Dict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from app import create_app, jobtypes  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.store.users import issue_token  # noqa: E402
from tests.support import mssql as mssql_support  # noqa: E402

# Nothing listens here: tests that must not reach Kafka point at it.
CLOSED_KAFKA = "127.0.0.1:1"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = "sqlite:///%s" % (tmp_path / "jobs.sqlite3")
    upgrade(url)
    return url


def pytest_collection_modifyitems(config, items):
    """Without a SQL Server (JOBLAB_TEST_MSSQL_URL), the tests' MSSQL half is left out, counted,
    and said so in one line at the end (pytest_terminal_summary): not run, never silently."""
    if mssql_support.configured_url():
        return
    def on_mssql(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return "mssql" in (params.get("store_url"), params.get("db_url"))

    left_out = [i for i in items if on_mssql(i)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if i not in set(left_out)]
    config.stash[MSSQL_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left_out = config.stash.get(MSSQL_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line("%d MSSQL tests not run (deselected): %s" % (left_out, mssql_support.SKIP_REASON))


MSSQL_LEFT_OUT = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def mssql():
    """The user's SQL Server (tests/support/mssql.py), or a skip saying how to give one."""
    url = mssql_support.configured_url()
    if not url:
        pytest.skip(mssql_support.SKIP_REASON)
    server = mssql_support.MssqlServer(url)
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "mssql"])
def store_url(request, tmp_path):
    """A migrated store of its own: SQLite, and SQL Server when JOBLAB_TEST_MSSQL_URL names one
    (else that half is skipped, with the reason in the summary). PostgreSQL: tests/integration."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    with mssql_store(request) as url:
        yield url


@contextlib.contextmanager
def mssql_store(request):
    """A migrated database of its own on the user's SQL Server, dropped afterwards."""
    server = request.getfixturevalue("mssql")
    url = server.new_database()
    try:
        upgrade(url)
        yield url
    finally:
        server.drop(url)


@pytest.fixture
def make_app() -> Callable[..., Any]:
    """Build an app on a given store and broker; engines and producers are closed afterwards."""
    built = []

    def build(db_url: str, bootstrap: str = CLOSED_KAFKA, **config: Any):
        settings: Dict[str, Any] = {
            "DATABASE_URL": db_url,
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_SEND_TIMEOUT": 2.0,
        }
        settings.update(config)
        app = create_app(settings)
        app.testing = True
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["joblab_queue"].close()
        app.extensions["joblab_db"].dispose()
        if "joblab_kafka_state" in app.extensions:  # made by a scrape of /metrics
            app.extensions["joblab_kafka_state"].close()


def auth(app: Any, name: str) -> Dict[str, str]:
    """Authorization header of a new token for user ``name``."""
    _uid, token, _created = issue_token(app.extensions["joblab_db"].engine, name)
    return {"Authorization": "Bearer " + token}


@pytest.fixture
def job_type():
    """Register throw-away job types for one test (the worker runs them when it runs in-process)."""
    added = []

    def register(name, func, **options):
        jobtypes.job_type(name, **options)(func)
        added.append(name)

    yield register
    for name in added:
        jobtypes.REGISTRY.pop(name, None)
