"""The property the hostile-input issue asks for, checked with generated inputs (hypothesis):
whatever a client POSTs, the API answers 4xx (or, Kafka being down in unit tests, 503 for a valid
job), never a 500; whatever args reach the worker and whatever a record on a topic holds, handling
it never raises out of Worker.handle, and the job it names never stays queued or running."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.jobtypes import REGISTRY
from app.states import JobStatus
from app.store import jobs as js
from tests.conftest import auth
from tests.drills.hostile import hostile_bodies
from tests.unit.doubles import handle

# Fixtures are built once per test, not per example: that is what these tests want.
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 20, max_value=10 ** 40)
           | st.floats() | st.text(max_size=30))
keys = st.sampled_from(["numbers", "seconds", "message", "x"]) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=4),
                           max_leaves=25)
types = st.sampled_from(sorted(REGISTRY) + ["", "nope"])


@pytest.fixture
def fast_app(make_app, sqlite_url):
    # Valid jobs go on to the closed Kafka port: fail fast there (503), only the status matters.
    return make_app(sqlite_url, KAFKA_SEND_TIMEOUT=0.05)


def test_every_shape_the_drill_sends_is_refused_4xx(fast_app):
    client, headers = fast_app.test_client(), auth(fast_app, "hostile")
    for name, body, extra in hostile_bodies():
        resp = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json", **headers, **extra})
        assert 400 <= resp.status_code < 500, (name, resp.status_code)
        assert resp.get_json()["status"] == resp.status_code, name


@SETTINGS
@given(job_type=types, args=json_values)
def test_no_generated_body_is_a_server_error(fast_app, job_type, args):
    client, headers = fast_app.test_client(), auth(fast_app, "fuzz")
    body = json.dumps({"type": job_type, "args": args})  # floats may be written as NaN/Infinity: refused
    resp = client.post("/v1/jobs", data=body, content_type="application/json", headers=headers)
    assert resp.status_code in (400, 413, 503), (resp.status_code, body[:200])
    assert resp.get_json()["status"] == resp.status_code


@SETTINGS
@given(job_type=types, args=st.dictionaries(keys, json_values, max_size=3))
def test_no_stored_args_can_escape_the_worker(worker, engine, user, job_type, args):
    """Args that bypassed the API (an old row, a bug, a hand-written INSERT)."""
    job_id = js.create_job(engine, user, job_type or "x", args)["id"]
    value = json.dumps({"v": 1, "job_id": job_id, "type": job_type, "args": args, "attempt": 1}).encode()
    handle(worker, value, key=job_id.encode())  # must not raise
    status = js.get_job(engine, job_id)["status"]
    assert status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED)  # queued: its retry is on the topic
    if status is JobStatus.QUEUED:
        assert [s[1] for s in worker.queue.on("jobs.retry")][-1] == job_id


@SETTINGS
@given(value=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | st.fixed_dictionaries({"job_id": scalars, "type": scalars, "args": json_values, "attempt": scalars},
                               optional={"not_before": scalars}).map(lambda v: json.dumps(v).encode()))
def test_no_record_can_escape_the_worker(worker, value):
    from kafka.structs import TopicPartition

    worker.paused_until.clear()  # the worker is shared by the examples: this one's pause only
    before = len(worker.consumer.commits)
    handle(worker, value, topic="jobs.retry")  # must not raise
    committed_it = len(worker.consumer.commits) == before + 1
    assert committed_it or TopicPartition("jobs.retry", 0) in worker.paused_until  # committed, or due later
