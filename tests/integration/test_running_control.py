"""Running work under control, for real (broker, store, the worker in a thread): a `sleep` job
cancelled over HTTP while it runs ends `cancelled` within a moment; a type's timeout ends a
busy run (in a thread the bound is an exception set on that thread) and the worker goes on."""
from __future__ import annotations

import time

import pytest

from app.store import history

pytestmark = pytest.mark.integration


def test_cancel_a_running_sleep_job_over_http(stack):
    job_id = stack.submit("sleep", {"seconds": 30})
    stack.start_worker()
    stack.wait_status(job_id, "running")
    started = time.monotonic()
    answer = stack.client.post("/v1/jobs/%s/cancel" % job_id, headers=stack.user)
    assert answer.status_code == 202 and answer.get_json()["status"] == "running"
    job = stack.wait_status(job_id, "cancelled", "succeeded", "failed", timeout=10)
    assert job["status"] == "cancelled" and time.monotonic() - started < 5
    kinds = [e["kind"] for e in history.events_of(stack.engine, job_id)]
    assert kinds[-2:] == ["cancel_requested", "cancelled"]
    assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).status_code == 409


def test_a_busy_run_past_its_timeout_fails_and_the_worker_goes_on(stack, job_type):
    def spin():
        while True:
            sum(range(1000))

    job_type("spin", spin, timeout=0.5, max_attempts=1)
    job_id = stack.submit("spin", {})
    after = stack.submit("sum", {"numbers": [1, 2]})
    stack.start_worker()
    job = stack.wait_status(job_id, "failed", timeout=20)
    assert job["error"] == "timed out after 0.5 s" and job["attempts"] == 1
    assert stack.wait_status(after, "succeeded")["status"] == "succeeded"
