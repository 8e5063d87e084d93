"""Unit-test fixtures: an app on a fresh SQLite store (Kafka at a closed port), its client, a
user's auth header, and a bare engine with a user for store-level tests."""
import pytest

from app.store import make_engine
from app.store.users import issue_token
from tests.conftest import auth


@pytest.fixture
def app(make_app, sqlite_url):
    return make_app(sqlite_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def alice(app):
    return auth(app, "alice")


@pytest.fixture
def engine(sqlite_url):
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def user(engine):
    uid, _token, _ = issue_token(engine, "alice")
    return uid
