"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

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

# Nothing listens here: tests that must not reach Kafka point at it.
CLOSED_KAFKA = "127.0.0.1:1"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = "sqlite:///%s" % (tmp_path / "jobs.sqlite3")
    upgrade(url)
    return url


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


def auth(app: Any, name: str) -> Dict[str, str]:
    """Authorization header of a new token for user ``name``."""
    _uid, token, _created = issue_token(app.extensions["joblab_db"].engine, name)
    return {"Authorization": "Bearer " + token}


@pytest.fixture
def job_type():
    """Register throw-away job types for one test (the worker runs them when it runs in-process)."""
    added = []

    def register(name, func):
        jobtypes.job_type(name)(func)
        added.append(name)

    yield register
    for name in added:
        jobtypes.REGISTRY.pop(name, None)
