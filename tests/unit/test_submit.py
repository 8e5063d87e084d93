"""Submitting: POST /v1/jobs/batch (validated all or none, one transaction, per-job enqueue
outcome) and Idempotency-Key on both submit routes. Kafka is a stand-in that takes or refuses
each job on cue; the store is a real SQLite file."""
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.jobqueue import QueueUnavailable
from app.store import jobs as js
from app.store.schema import idempotency_keys
from tests.conftest import auth
from tests.unit.test_api import assert_error, engine, user_id


class Kafka:
    """The app's queue, taking every job but those listed in ``refuse`` (by position)."""

    def __init__(self, app):
        self.sent, self.refuse = [], set()
        queue = app.extensions["joblab_queue"]
        queue.send = lambda topic, key, value, headers=None: self.sent.append(key)
        queue.send_many = self.send_many

    def send_many(self, topic, items):
        out = []
        for i, (key, _value) in enumerate(items):
            if i in self.refuse:
                out.append("kafka: KafkaTimeoutError")
            else:
                self.sent.append(key)
                out.append(None)
        return out


@pytest.fixture
def kafka(app):
    return Kafka(app)


def batch(*jobs):
    return {"jobs": list(jobs)}


SUM = {"type": "sum", "args": {"numbers": [1, 2]}}
NOOP = {"type": "noop", "args": {}}


def stored(app, headers):
    return js.list_jobs(engine(app), user_id(app, headers), limit=100)[0]


def test_a_batch_is_recorded_and_sent_together(client, app, alice, kafka):
    resp = client.post("/v1/jobs/batch", json=batch(SUM, NOOP, SUM), headers=alice)
    assert resp.status_code == 202
    jobs = resp.get_json()["jobs"]
    assert [j["type"] for j in jobs] == ["sum", "noop", "sum"] and {j["status"] for j in jobs} == {"queued"}
    assert kafka.sent == [j["id"] for j in jobs] and len(stored(app, alice)) == 3


@pytest.mark.parametrize("body, field", [
    (batch(SUM, {"type": "sum", "args": {"numbers": ["x"]}}), "jobs.1.args.numbers.0"),
    (batch({"type": "nope", "args": {}}), "jobs.0.type"),
    ({"jobs": []}, "jobs"),
    ({"jobs": SUM}, "jobs"),
    ({}, "jobs"),
])
def test_an_invalid_job_refuses_the_whole_batch(client, app, alice, kafka, body, field):
    assert_error(client.post("/v1/jobs/batch", json=body, headers=alice), 400, field)
    assert stored(app, alice) == [] and kafka.sent == []


def test_batch_size_is_bounded(make_app, sqlite_url):
    app = make_app(sqlite_url, BATCH_MAX=3)
    Kafka(app)
    headers = auth(app, "alice")
    body = assert_error(app.test_client().post("/v1/jobs/batch", json=batch(*[NOOP] * 4), headers=headers), 400, "jobs")
    assert "At most 3" in body["message"] and stored(app, headers) == []


def test_a_batch_past_the_quota_is_refused_whole(make_app, sqlite_url):
    app = make_app(sqlite_url, USER_MAX_ACTIVE=3)
    Kafka(app)
    headers = auth(app, "alice")
    client = app.test_client()
    assert client.post("/v1/jobs/batch", json=batch(NOOP, NOOP), headers=headers).status_code == 202
    resp = client.post("/v1/jobs/batch", json=batch(NOOP, NOOP), headers=headers)
    assert_error(resp, 429)
    assert resp.headers["Retry-After"] and len(stored(app, headers)) == 2


def test_jobs_kafka_did_not_take_are_failed_and_said_so(client, app, alice, kafka):
    kafka.refuse = {1}
    resp = client.post("/v1/jobs/batch", json=batch(NOOP, NOOP, NOOP), headers=alice)
    assert resp.status_code == 207
    jobs = resp.get_json()["jobs"]
    assert [j["status"] for j in jobs] == ["queued", "failed", "queued"]
    assert jobs[1]["error"].startswith("not enqueued")
    assert js.get_job(engine(app), jobs[1]["id"])["status"].value == "failed"  # not left looking queued
    kafka.refuse = {0, 1}
    assert client.post("/v1/jobs/batch", json=batch(NOOP, NOOP), headers=alice).status_code == 503


# -- Idempotency-Key ------------------------------------------------------------------------------
@pytest.mark.parametrize("url, body", [("/v1/jobs", SUM), ("/v1/jobs/batch", batch(SUM, NOOP))])
def test_a_retry_with_the_same_key_returns_the_first_jobs(client, app, alice, kafka, url, body):
    headers = dict(alice, **{"Idempotency-Key": "order-42"})
    first = client.post(url, json=body, headers=headers)
    again = client.post(url, json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert first.get_json() == again.get_json()
    assert len(kafka.sent) == len(stored(app, alice))  # sent once, stored once
    # The same key for another request is a mistake, said as such; other users have their own keys.
    other = batch(NOOP) if url.endswith("batch") else NOOP
    assert_error(client.post(url, json=other, headers=headers), 422, "Idempotency-Key")
    bob = dict(auth(app, "bob"), **{"Idempotency-Key": "order-42"})
    assert "Idempotent-Replayed" not in client.post(url, json=body, headers=bob).headers


def test_a_replay_shows_the_jobs_as_they_are_now(client, app, alice, kafka):
    headers = dict(alice, **{"Idempotency-Key": "k1"})
    job_id = client.post("/v1/jobs", json=SUM, headers=headers).get_json()["id"]
    js.claim_job(engine(app), job_id)
    assert client.post("/v1/jobs", json=SUM, headers=headers).get_json()["status"] == "running"


def refuse_single_sends(app):
    def refuse(topic, key, value, headers=None):
        raise QueueUnavailable("kafka: KafkaTimeoutError")
    app.extensions["joblab_queue"].send = refuse


def test_a_submit_kafka_refused_may_be_tried_again_with_its_key(client, app, alice, kafka):
    # The 503 says "try again": a client with a key tries again with the same key, and gets a job.
    headers = dict(alice, **{"Idempotency-Key": "k-503"})
    refuse_single_sends(app)
    first = client.post("/v1/jobs", json=SUM, headers=headers)
    assert first.status_code == 503
    Kafka(app)  # Kafka is back
    again = client.post("/v1/jobs", json=SUM, headers=headers)
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert again.get_json()["id"] != first.get_json()["id"]
    assert js.get_job(engine(app), first.get_json()["id"])["status"].value == "failed"


def test_a_replay_of_a_refused_submit_is_refused_too(client, app, alice, kafka, monkeypatch):
    # The key could not be freed (the store failed just then): a replay answers as the first did.
    from sqlalchemy.exc import OperationalError

    def store_down(*args):
        raise OperationalError("DELETE", {}, Exception("down"))

    monkeypatch.setattr(js, "forget_key", store_down)
    headers = dict(alice, **{"Idempotency-Key": "k-503"})
    refuse_single_sends(app)
    first = client.post("/v1/jobs", json=SUM, headers=headers)
    Kafka(app)
    again = client.post("/v1/jobs", json=SUM, headers=headers)
    assert first.status_code == again.status_code == 503 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]


def test_a_batch_replay_answers_as_the_first_did(client, app, alice, kafka):
    headers = dict(alice, **{"Idempotency-Key": "b-207"})
    kafka.refuse = {1}
    first = client.post("/v1/jobs/batch", json=batch(SUM, NOOP), headers=headers)
    again = client.post("/v1/jobs/batch", json=batch(SUM, NOOP), headers=headers)
    assert first.status_code == again.status_code == 207 and again.headers["Idempotent-Replayed"] == "true"
    # Kafka took none: 503, and the key is free for the next try.
    headers = dict(alice, **{"Idempotency-Key": "b-503"})
    kafka.refuse = {0, 1}
    assert client.post("/v1/jobs/batch", json=batch(SUM, NOOP), headers=headers).status_code == 503
    kafka.refuse = set()
    retry = client.post("/v1/jobs/batch", json=batch(SUM, NOOP), headers=headers)
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers


def test_an_expired_key_makes_new_jobs(client, app, alice, kafka):
    headers = dict(alice, **{"Idempotency-Key": "k1"})
    first = client.post("/v1/jobs", json=SUM, headers=headers).get_json()["id"]
    with engine(app).begin() as conn:
        conn.execute(update(idempotency_keys).values(
            created_at=js.utcnow() - js.IDEMPOTENCY_TTL - timedelta(seconds=1)))
    second = client.post("/v1/jobs", json=SUM, headers=headers)
    assert "Idempotent-Replayed" not in second.headers and second.get_json()["id"] != first


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "bell\x07", "caf\u00e9"])
def test_a_bad_key_is_400(client, alice, kafka, key):
    resp = client.post("/v1/jobs", json=SUM, headers=dict(alice, **{"Idempotency-Key": key}))
    assert_error(resp, 400, "Idempotency-Key")


@pytest.mark.parametrize("route, body", [("/v1/jobs", SUM), ("/v1/jobs/batch", batch(SUM, NOOP))])
def test_the_202s_times_are_what_every_later_get_shows_and_the_store_keeps(client, app, alice, kafka, route, body):
    from datetime import datetime

    resp = client.post(route, json=body, headers=alice)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    accepted = resp.get_json().get("jobs") or [resp.get_json()]
    for job in accepted:
        later = client.get("/v1/jobs/" + job["id"], headers=alice).get_json()
        assert later["created_at"] == job["created_at"]
        kept = js.get_job(engine(app), job["id"])["created_at"]
        assert datetime.strptime(job["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ") == kept  # to the microsecond
