"""The fast submit path on both real stores and the real broker: the one-statement quota INSERT,
bulk submits, Idempotency-Key replays, and the worker draining them in batches."""
from sqlalchemy import func, select

from app.store.schema import jobs


def count_jobs(stack):
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(jobs)).scalar()


def test_the_quota_is_enforced_by_the_insert_itself(make_stack, db_url):
    stack = make_stack(db_url, USER_MAX_ACTIVE=3)
    for _ in range(3):
        stack.submit("noop", {})
    resp = stack.client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=stack.user)
    assert resp.status_code == 429 and resp.get_json()["active"] == 3 and resp.headers["Retry-After"]
    batch = stack.client.post("/v1/jobs/batch", json={"jobs": [{"type": "noop", "args": {}}]}, headers=stack.user)
    assert batch.status_code == 429
    assert count_jobs(stack) == 3  # nothing stored for the refused ones


def test_a_bulk_submit_runs_every_job_and_a_replay_makes_none(make_stack, db_url):
    stack = make_stack(db_url)
    body = {"jobs": [{"type": "sum", "args": {"numbers": [i, 1]}} for i in range(120)]}
    key = {"Idempotency-Key": "bulk-1"}
    resp = stack.client.post("/v1/jobs/batch", json=body, headers=dict(stack.user, **key))
    assert resp.status_code == 202, resp.get_data(as_text=True)
    ids = [j["id"] for j in resp.get_json()["jobs"]]
    assert len(set(ids)) == 120
    stack.start_worker()
    for i, job_id in enumerate(ids):
        assert stack.wait_status(job_id, "succeeded")["status"] == "succeeded"
        assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).get_json()["result"] == {"sum": i + 1}
    again = stack.client.post("/v1/jobs/batch", json=body, headers=dict(stack.user, **key))
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert [j["id"] for j in again.get_json()["jobs"]] == ids
    assert {j["status"] for j in again.get_json()["jobs"]} == {"succeeded"}  # as they are now
    assert count_jobs(stack) == 120
    other = stack.client.post("/v1/jobs/batch", json={"jobs": body["jobs"][:1]}, headers=dict(stack.user, **key))
    assert other.status_code == 422


def test_a_retried_single_submit_with_its_key_returns_the_first_job(make_stack, db_url):
    stack = make_stack(db_url)
    headers = dict(stack.user, **{"Idempotency-Key": "one"})
    first = stack.client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=headers)
    second = stack.client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"] and second.headers["Idempotent-Replayed"] == "true"
    assert count_jobs(stack) == 1
    stack.start_worker()
    stack.wait_status(first.get_json()["id"], "succeeded")
