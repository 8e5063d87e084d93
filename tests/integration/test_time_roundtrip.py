"""Times round-trip on every store: what the API hands out in the 202 (and later in each GET) is
exactly what the store keeps, so a client never sees one `created_at` in the 202 and another in
every later GET. The trap this guards against: SQL Server's DATETIME rounds to 1/300 s, and
times finer than a store keeps (or than the API shows) come back changed."""
from __future__ import annotations

from datetime import datetime

from app.store import jobs as job_store

TIMES = ("created_at", "started_at", "finished_at")


def parse(value):
    """The API's UTC time (2026-11-28T16:59:50.112Z) as the store's naive datetime."""
    return None if value is None else datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_times_in_the_202_and_every_get_are_the_stored_ones(stack):
    resp = stack.client.post("/v1/jobs", json={"type": "sum", "args": {"numbers": [1, 2]}}, headers=stack.user)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    accepted = resp.get_json()
    stored = job_store.get_job(stack.engine, accepted["id"])
    # Exactly the stored value, to the microsecond: nothing finer was written than the API shows.
    assert parse(accepted["created_at"]) == stored["created_at"]
    assert stack.job(accepted["id"])["created_at"] == accepted["created_at"]

    stack.start_worker()
    done = stack.wait_status(accepted["id"], "succeeded")
    stored = job_store.get_job(stack.engine, accepted["id"])
    for name in TIMES:
        assert parse(done[name]) == stored[name], name
    listed = stack.client.get("/v1/jobs?limit=10", headers=stack.user).get_json()["jobs"]
    assert [{k: j[k] for k in TIMES} for j in listed if j["id"] == accepted["id"]] == [{k: done[k] for k in TIMES}]
