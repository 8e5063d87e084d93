"""Unit-test fixtures: an app on a fresh store (SQLite; SQL Server too with JOBLAB_TEST_MSSQL_URL) (Kafka at a closed port), its client, a
user's auth header, a bare engine with a user for store-level tests, and the real Worker with
scripted Kafka doubles."""
import pytest

from app.store import make_engine
from app.store.users import issue_token
from tests.conftest import auth
from tests.unit.doubles import NOW, TOPICS, Consumer, KafkaDown, Queue
from worker.runner import Worker


@pytest.fixture
def app(make_app, store_url):
    app = make_app(store_url)
    app.extensions["joblab_kafka_state"] = KafkaDown()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def alice(app):
    return auth(app, "alice")


@pytest.fixture
def engine(store_url):
    eng = make_engine(store_url)
    yield eng
    eng.dispose()


@pytest.fixture
def user(engine):
    uid, _token, _ = issue_token(engine, "alice")
    return uid


@pytest.fixture
def worker(engine):
    """The real Worker on the store, with the scripted consumer and queue (tests/unit/doubles.py)."""
    return Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3,
                  backoff=0.5, backoff_max=30.0, clock=lambda: NOW)
