"""Each job's history (app/store/history.py): every step of its life, written with the state change
it records, and GET /v1/jobs/<id>/events for its owner only. (The real Worker and store, the
scripted Kafka doubles.)"""
import pytest

from app.states import JobStatus
from app.store import history
from app.store import jobs as js
from tests.conftest import auth
from tests.unit.doubles import handle, next_retry, submit
from tests.unit.test_worker_batch import batch_of


def kinds(engine, job_id):
    return [e["kind"] for e in history.events_of(engine, job_id)]


def test_a_job_that_fails_once_then_succeeds_tells_every_step(worker, engine, user, job_type):
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return {"ok": True}

    job_type("flaky", flaky)
    job_id, value = submit(engine, user, "flaky", {})
    handle(worker, value, offset=7)
    next_retry(worker, offset=3)
    assert js.get_job(engine, job_id)["status"] is JobStatus.SUCCEEDED
    events = history.events_of(engine, job_id)
    assert [e["kind"] for e in events] == ["submitted", "enqueued", "claimed", "retried", "claimed", "succeeded"]
    enqueued, first, retried, second = events[1], events[2], events[3], events[4]
    assert (enqueued["attempt"], enqueued["kafka_topic"], enqueued["kafka_offset"]) == (1, "jobs", 7)
    assert (first["attempt"], first["kafka_topic"], first["kafka_partition"], first["kafka_offset"]) == (1, "jobs", 0, 7)
    assert (second["attempt"], second["kafka_topic"], second["kafka_offset"]) == (2, "jobs.retry", 3)
    assert first["actor"] == second["actor"] == worker.name and ":" in worker.name
    assert retried["attempt"] == 1 and "first try fails" in retried["detail"] and "retry in" in retried["detail"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_a_job_that_never_succeeds_ends_failed_in_its_history(worker, engine, user):
    job_id, value = submit(engine, user, "fail", {"message": "no luck"})
    handle(worker, value)
    next_retry(worker, 1)
    next_retry(worker, 2)
    assert kinds(engine, job_id) == ["submitted", "enqueued", "claimed", "retried", "claimed", "retried", "claimed",
                                     "failed"]
    assert "no luck" in history.events_of(engine, job_id)[-1]["detail"]


def test_a_batch_writes_each_jobs_steps_together(worker, engine, user):
    batch, ids = batch_of(engine, user, per_partition=4)
    worker.handle_batch(batch)
    for offset, job_id in enumerate(ids):
        events = history.events_of(engine, job_id)
        assert [e["kind"] for e in events] == ["submitted", "enqueued", "claimed", "succeeded"]
        assert events[2]["kafka_offset"] == offset and events[2]["actor"] == worker.name


def test_a_step_is_written_with_its_state_change_or_not_at_all(worker, engine, user, monkeypatch):
    job_id, value = submit(engine, user, "noop", {})
    real = history.record

    def refusing(conn, rows):
        if any(r["kind"] == "succeeded" for r in rows):
            raise RuntimeError("history refused")
        real(conn, rows)

    monkeypatch.setattr(history, "record", refusing)
    handle(worker, value)
    # The success and its step were one transaction: neither was written.
    assert js.get_job(engine, job_id)["status"] is not JobStatus.SUCCEEDED
    assert "succeeded" not in kinds(engine, job_id)
    assert js.get_result(engine, job_id) is None


@pytest.fixture
def placed(app):
    """The app's queue, acknowledging every job (one sent alone at partition 2, offsets 40, 41, ...)."""
    queue = app.extensions["joblab_queue"]
    offsets = iter(range(40, 1000))
    queue.send = lambda topic, key, value, headers=None: (topic, 2, next(offsets))
    queue.send_many = lambda topic, items: [None for _ in items]
    return queue


def test_the_owner_reads_the_history_and_nobody_else(app, client, alice, placed):
    job_id = client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice).get_json()["id"]
    answer = client.get("/v1/jobs/%s/events" % job_id, headers=alice)
    assert answer.status_code == 200
    events = answer.get_json()["events"]
    # Submitted (the row itself); `enqueued` comes with the first claim, from the record a worker read.
    assert [e["kind"] for e in events] == ["submitted"]
    assert events[0]["at"] == client.get("/v1/jobs/%s" % job_id, headers=alice).get_json()["created_at"]
    bob = auth(app, "bob")
    other = client.get("/v1/jobs/%s/events" % job_id, headers=bob)
    assert other.status_code == 404 and other.get_json()["message"] == client.get(
        "/v1/jobs/%s" % job_id, headers=bob).get_json()["message"]
    assert client.get("/v1/jobs/%s/events" % job_id).status_code == 401


def test_a_bulk_submit_and_a_cancel_are_in_the_history(client, alice, placed):
    jobs = client.post("/v1/jobs/batch", json={"jobs": [{"type": "noop", "args": {}}] * 3}, headers=alice).get_json()
    ids = [j["id"] for j in jobs["jobs"]]
    assert all([e["kind"] for e in client.get("/v1/jobs/%s/events" % i, headers=alice).get_json()["events"]]
               == ["submitted"] for i in ids)
    assert client.post("/v1/jobs/%s/cancel" % ids[0], headers=alice).status_code == 200
    last = client.get("/v1/jobs/%s/events" % ids[0], headers=alice).get_json()["events"][-1]
    assert (last["kind"], last["actor"]) == ("cancelled", "alice")
