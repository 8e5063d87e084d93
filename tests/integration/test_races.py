"""Races that need the real broker and database: a cancel against a claim, and two deliveries of
one job running at once (two consumer groups read the same topic, as a replay would)."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
from sqlalchemy import func, select

from app.jobtypes import JobFailed
from app.store import jobs as js
from app.store.schema import results
from tests.integration.test_pipeline import events

pytestmark = pytest.mark.integration


def result_rows(stack, job_id):
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(results).where(results.c.job_id == job_id)).scalar()


def test_cancel_against_claim_one_wins_per_job(make_stack, db_url):
    stack = make_stack(db_url)
    ids = [stack.submit("sleep", {"seconds": 0}) for _ in range(40)]
    stack.start_worker()

    def cancel(job_id):
        client = stack.app.test_client()
        return job_id, client.post("/v1/jobs/%s/cancel" % job_id, headers=stack.user).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = dict(pool.map(cancel, ids))
    for job_id in ids:
        job = stack.wait_status(job_id, "cancelled", "succeeded")
        if answers[job_id] == 200:  # the cancel won: never ran, no result
            assert job["status"] == "cancelled" and job["attempts"] == 0 and result_rows(stack, job_id) == 0
        elif answers[job_id] == 202:  # it was running: cancelled when its run ended, no result kept
            assert job["status"] == "cancelled" and job["attempts"] == 1 and result_rows(stack, job_id) == 0
        else:  # it had finished: the cancel was refused, the job ran once
            assert answers[job_id] == 409 and job["status"] == "succeeded" and result_rows(stack, job_id) == 1
    assert set(answers.values()) <= {200, 202, 409}


def both_handled(stack, seconds=60):
    """Until each group's worker has handled (and committed) the job's message."""
    deadline = time.monotonic() + seconds
    while not all(t.worker.handled >= 1 for t in stack.threads):
        assert time.monotonic() < deadline, "a delivery never finished"
        time.sleep(0.05)


def two_deliveries(stack, job_type, second):
    """Run job type `duo` through two groups at once. The first delivery to start waits until the
    second has claimed the job too, then returns; the second then does ``second(first_done)``."""
    lock, started = threading.Lock(), []
    both_claimed, first_stored = threading.Event(), threading.Event()

    def duo():
        with lock:
            started.append(1)
            role = len(started)
        if role == 1:
            assert both_claimed.wait(60), "the second delivery never came"
            return {"by": "first"}
        both_claimed.set()
        return second(first_stored)

    job_type("duo", duo)
    job_id = stack.submit("duo", {})
    stack.start_worker()
    stack.start_worker(group=stack.settings["KAFKA_GROUP"] + "-replay")

    def watch():
        stack.wait_status(job_id, "succeeded", timeout=60)
        first_stored.set()

    threading.Thread(target=watch, daemon=True).start()
    return job_id


def test_two_deliveries_at_once_store_one_result_and_one_event(make_stack, db_url, job_type):
    stack = make_stack(db_url)

    def second(first_stored):
        assert first_stored.wait(60)
        return {"by": "second"}

    job_id = two_deliveries(stack, job_type, second)
    job = stack.wait_status(job_id, "succeeded")
    both_handled(stack)
    assert job["attempts"] == 2 and result_rows(stack, job_id) == 1
    assert js.get_result(stack.engine, job_id) == {"by": "first"}
    assert len(events(stack, stack.topics.succeeded, job_id)) == 1


def test_a_parallel_last_attempt_failing_after_a_success_sends_nothing(make_stack, db_url, job_type):
    stack = make_stack(db_url, MAX_ATTEMPTS=2)  # the second claim is the job's last attempt

    def second(first_stored):
        assert first_stored.wait(60)
        raise JobFailed("the last attempt fails after the first delivery succeeded")

    job_id = two_deliveries(stack, job_type, second)
    stack.wait_status(job_id, "succeeded")
    both_handled(stack)  # the failing delivery has finished: whatever it sent is on the topics
    job = stack.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert [r for r in stack.read_topic(stack.topics.dead) if r.key == job_id.encode()] == []
    assert events(stack, stack.topics.failed, job_id, wanted=0) == []
