"""Control over running work: per-type timeout, max_attempts and backoff (app/jobtypes.py), and a
cancel of a running job, which the job may see and which ends its attempt `cancelled`
(app/jobcontext.py, worker/control.py). The real Worker and store, the scripted Kafka doubles."""
import json
import time

import pytest

from app import jobcontext
from app.jobcontext import current_job
from app.jobtypes import job_type as register
from app.states import JobStatus
from app.store import history
from app.store import jobs as js
from tests.unit.doubles import NOW, handle, next_retry, submit


def kinds(engine, job_id):
    return [e["kind"] for e in history.events_of(engine, job_id)]


@pytest.fixture
def quick_checks(monkeypatch):
    monkeypatch.setattr(jobcontext.JobContext, "check_every", 0.01)


def test_a_run_past_its_types_timeout_fails_that_attempt_and_the_worker_goes_on(worker, engine, user, job_type):
    job_type("stuck", lambda: time.sleep(30), timeout=0.3, max_attempts=2)
    job_id, value = submit(engine, user, "stuck", {})
    started = time.monotonic()
    handle(worker, value)
    assert time.monotonic() - started < 5  # the timeout ended the run, not the sleep
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.QUEUED and job["error"] == "timed out after 0.3 s"
    next_retry(worker, 1)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.FAILED and job["attempts"] == 2  # the type's max_attempts, not 3
    assert worker.queue.on("jobs.dead")  # dead-lettered like any failure
    ok_id, ok_value = submit(engine, user, "noop", {})
    handle(worker, ok_value, offset=2)
    assert js.get_job(engine, ok_id)["status"] is JobStatus.SUCCEEDED  # the worker is fine


def test_a_job_cannot_swallow_its_timeout(worker, engine, user, job_type):
    def stubborn():
        try:
            time.sleep(30)
        except Exception:
            return {"swallowed": True}

    job_type("stubborn", stubborn, timeout=0.2, max_attempts=1)
    job_id, value = submit(engine, user, "stubborn", {})
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert (job["status"], job["error"]) == (JobStatus.FAILED, "timed out after 0.2 s")


def test_a_types_backoff_decides_the_retry_delay(worker, engine, user, job_type):
    job_type("slow_retry", lambda: 1 / 0, backoff=lambda attempt: 7.0 * attempt, max_attempts=3)
    job_type("capped", lambda: 1 / 0, backoff=3600)
    for name, wanted in (("slow_retry", 7.0), ("capped", 30.0)):  # capped at RETRY_BACKOFF_MAX
        _job_id, value = submit(engine, user, name, {})
        handle(worker, value)
        retry = json.loads(worker.queue.on("jobs.retry")[-1][2])
        assert retry["not_before"] == pytest.approx(NOW + wanted)


def test_bad_options_are_refused_when_the_type_is_defined():
    for options in ({"timeout": 0}, {"timeout": "5"}, {"max_attempts": 0}, {"max_attempts": 2.5},
                    {"backoff": -1}, {"backoff": "fast"}):
        with pytest.raises(ValueError):
            register("never_registered", **options)


def test_a_running_job_sees_its_cancel_and_ends_cancelled(worker, engine, user, job_type, quick_checks):
    seen = {}

    def watchful():
        job = current_job()
        _row, done = js.cancel_job(engine, job.job_id, user, actor="alice")  # as a concurrent POST .../cancel would
        seen["request"] = done
        deadline = time.monotonic() + 5
        while not job.cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        seen["saw"] = job.cancelled()
        return {"stopped": True}

    job_type("watchful", watchful)
    job_id, value = submit(engine, user, "watchful", {})
    handle(worker, value)
    assert seen == {"request": "requested", "saw": True}
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.CANCELLED and js.get_result(engine, job_id) is None
    assert kinds(engine, job_id)[-3:] == ["claimed", "cancel_requested", "cancelled"]
    assert not worker.queue.on("jobs.succeeded")


def test_a_job_that_ignores_its_cancel_is_ended_by_its_timeout_and_stays_cancelled(worker, engine, user, job_type):
    def deaf():
        js.cancel_job(engine, current_job().job_id, user, actor="alice")
        time.sleep(30)

    job_type("deaf", deaf, timeout=0.3)
    job_id, value = submit(engine, user, "deaf", {})
    handle(worker, value)
    assert js.get_job(engine, job_id)["status"] is JobStatus.CANCELLED  # not retried
    assert not worker.queue.on("jobs.retry")


def test_the_sleep_job_stops_early_when_cancelled(worker, engine, user, job_type, quick_checks, monkeypatch):
    job_id, value = submit(engine, user, "sleep", {"seconds": 20})
    real = time.sleep
    asked = []

    def sleep_and_cancel(seconds):
        if not asked:
            asked.append(js.cancel_job(engine, job_id, user, actor="alice")[1])
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep_and_cancel)
    started = time.monotonic()
    handle(worker, value)
    assert asked == ["requested"] and time.monotonic() - started < 5
    assert js.get_job(engine, job_id)["status"] is JobStatus.CANCELLED


def test_cancel_over_http_answers_202_for_a_running_job(app, client, alice):
    job = client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice)
    job_id = job.get_json()["id"] if job.status_code == 202 else None
    if job_id is None:  # no broker here: the job is failed (not enqueued); make one running instead
        engine = app.extensions["joblab_db"].engine
        from app.store.users import user_for_token
        uid = user_for_token(engine, alice["Authorization"].split()[1])[0]
        job_id = js.create_job(engine, uid, "noop", {})["id"]
        js.claim_job(engine, job_id)
    answer = client.post("/v1/jobs/%s/cancel" % job_id, headers=alice)
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["status"] == "running" and body["cancel_requested_at"].endswith("Z")
    assert client.post("/v1/jobs/%s/cancel" % job_id, headers=alice).status_code == 409  # asked once already


def test_a_job_claimed_with_its_batch_but_cancelled_before_its_run_is_never_run(engine, user):
    job = js.create_job(engine, user, "noop", {})
    with engine.begin() as conn:
        assert job["id"] in js.claim_jobs(conn, [(job["id"], 1)])
    assert js.cancel_job(engine, job["id"], user, actor="alice")[1] == "requested"
    with engine.begin() as conn:
        assert js.release_jobs(conn, [(job["id"], 1)]) == 1
    assert js.get_job(engine, job["id"])["status"] is JobStatus.CANCELLED
    assert kinds(engine, job["id"])[-2:] == ["cancel_requested", "cancelled"]


def test_a_failed_attempt_of_a_job_whose_cancel_came_meanwhile_is_not_retried(worker, engine, user, job_type):
    def cancelled_then_broken():
        js.cancel_job(engine, current_job().job_id, user, actor="alice")
        raise RuntimeError("broken anyway")

    job_type("unlucky", cancelled_then_broken, max_attempts=1)
    job_id, value = submit(engine, user, "unlucky", {})
    handle(worker, value)  # its last attempt: the failure would dead-letter it
    assert js.get_job(engine, job_id)["status"] is JobStatus.CANCELLED
    assert not worker.queue.on("jobs.dead") and not worker.queue.on("jobs.retry")


def test_a_job_that_swallows_even_its_timeout_still_times_out(worker, engine, user, job_type):
    def sly():
        for _ in range(3):
            try:
                time.sleep(30)
            except BaseException:  # noqa: B036 - what a careless job does
                pass
        return {"finished": True}

    job_type("sly", sly, timeout=0.2, max_attempts=1)
    job_id, value = submit(engine, user, "sly", {})
    started = time.monotonic()
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert (job["status"], job["error"]) == (JobStatus.FAILED, "timed out after 0.2 s")
    assert time.monotonic() - started < 10  # interrupted again and again, not 90 s of sleep


def test_a_sleep_of_the_longest_job_allowed_completes(worker, engine, user, monkeypatch):
    from app import jobtypes

    monkeypatch.setattr(jobtypes.LIMITS, "job_max_seconds", 0.3)
    job_id, value = submit(engine, user, "sleep", {"seconds": 0.3})
    handle(worker, value)
    assert js.get_job(engine, job_id)["status"] is JobStatus.SUCCEEDED


def test_a_stray_alarm_after_a_run_is_ignored(worker, engine, user):
    import signal

    job_id, value = submit(engine, user, "noop", {})
    handle(worker, value)
    signal.raise_signal(signal.SIGALRM)  # as if the run's alarm had fired just as it ended
    assert js.get_job(engine, job_id)["status"] is JobStatus.SUCCEEDED
