"""State transitions in the store (SQLite): the rules that make redelivery harmless."""
import pytest
from sqlalchemy import func, select

from app.states import JobStatus
from app.store import jobs as js
from app.store.schema import results
from app.store.users import issue_token, user_for_token


def result_rows(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(results).where(results.c.job_id == job_id)).scalar()


def test_tokens_are_stored_hashed_and_resolve(engine):
    uid, token, created = issue_token(engine, "bob")
    assert created and user_for_token(engine, token) == (uid, "bob")
    assert user_for_token(engine, token + "x") is None
    with engine.connect() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT token_hash FROM api_tokens")]
    assert token not in stored and all(len(h) == 64 for h in stored)
    uid2, token2, created2 = issue_token(engine, "bob")
    assert (uid2, created2) == (uid, False) and token2 != token


def test_queued_running_succeeded(engine, user):
    job = js.create_job(engine, user, "sum", {"numbers": [1]})
    assert job["status"] is JobStatus.QUEUED and job["attempts"] == 0
    claimed = js.claim_job(engine, job["id"])
    assert claimed["status"] is JobStatus.RUNNING and claimed["attempts"] == 1 and claimed["started_at"]
    assert js.store_success(engine, job["id"], '{"sum":1}')
    done = js.get_job(engine, job["id"])
    assert done["status"] is JobStatus.SUCCEEDED and done["finished_at"]
    assert js.get_result(engine, job["id"]) == {"sum": 1}


def test_finished_job_is_never_claimed_or_stored_again(engine, user):
    job = js.create_job(engine, user, "sum", {"numbers": [1]})
    js.claim_job(engine, job["id"])
    assert js.store_success(engine, job["id"], '{"sum":1}')
    assert js.claim_job(engine, job["id"]) is None
    assert not js.store_success(engine, job["id"], '{"sum":2}')
    assert result_rows(engine, job["id"]) == 1 and js.get_result(engine, job["id"]) == {"sum": 1}


def test_running_job_of_a_dead_worker_is_claimed_again(engine, user):
    job = js.create_job(engine, user, "sum", {"numbers": [1]})
    js.claim_job(engine, job["id"])
    again = js.claim_job(engine, job["id"])
    assert again["status"] is JobStatus.RUNNING and again["attempts"] == 2


def test_retry_then_failure(engine, user):
    job = js.create_job(engine, user, "fail", {"message": "x"})
    js.claim_job(engine, job["id"])
    assert js.requeue_job(engine, job["id"], 1, "JobFailed: x")
    back = js.get_job(engine, job["id"])
    assert back["status"] is JobStatus.QUEUED and back["error"] == "JobFailed: x"
    js.claim_job(engine, job["id"])
    assert js.store_failure(engine, job["id"], "JobFailed: x")
    failed = js.get_job(engine, job["id"])
    assert failed["status"] is JobStatus.FAILED and failed["attempts"] == 2 and failed["finished_at"]
    assert js.claim_job(engine, job["id"]) is None


def test_cancel_only_queued_and_only_own(engine, user):
    other, _, _ = issue_token(engine, "mallory")
    job = js.create_job(engine, user, "sum", {"numbers": [1]})
    assert js.cancel_job(engine, job["id"], other) == (None, "")
    row, done = js.cancel_job(engine, job["id"], user)
    assert done == "cancelled" and row["status"] is JobStatus.CANCELLED
    assert js.claim_job(engine, job["id"]) is None
    row, done = js.cancel_job(engine, job["id"], user)
    assert not done and row["status"] is JobStatus.CANCELLED


def test_enqueue_failure_does_not_look_queued(engine, user):
    job = js.create_job(engine, user, "sum", {"numbers": [1]})
    assert js.mark_enqueue_failed(engine, job["id"], "kafka: KafkaTimeoutError")
    row = js.get_job(engine, job["id"])
    assert row["status"] is JobStatus.FAILED and "not enqueued" in row["error"]


def test_list_is_newest_first_paginated_and_per_user(engine, user):
    other, _, _ = issue_token(engine, "mallory")
    mine = [js.create_job(engine, user, "sum", {"numbers": [i]})["id"] for i in range(5)]
    js.create_job(engine, other, "sum", {"numbers": [9]})
    page1, cursor = js.list_jobs(engine, user, limit=2)
    page2, cursor2 = js.list_jobs(engine, user, limit=2, before=cursor)
    page3, cursor3 = js.list_jobs(engine, user, limit=2, before=cursor2)
    assert [r["id"] for r in page1 + page2 + page3] == mine[::-1]
    assert cursor3 is None
    js.cancel_job(engine, mine[0], user)
    cancelled, _ = js.list_jobs(engine, user, limit=10, status="cancelled")
    assert [r["id"] for r in cancelled] == [mine[0]]


def test_audit_reports_each_id_and_table_wide_anomalies(engine, user):
    from app.store.audit import audit_jobs

    done = js.create_job(engine, user, "sum", {"numbers": [1]})["id"]
    js.claim_job(engine, done)
    js.claim_job(engine, done)  # redelivered after a crash: a second claim, a duplicate execution
    js.store_success(engine, done, '{"sum":1}')
    stuck = js.create_job(engine, user, "sleep", {"seconds": 1})["id"]
    js.claim_job(engine, stuck)
    queued = js.create_job(engine, user, "sum", {"numbers": []})["id"]

    report = audit_jobs(engine, [done, stuck, queued, "no-such-id", done])
    assert report["ids"] == 4 and report["unknown"] == ["no-such-id"]
    assert report["status_counts"] == {"succeeded": 1, "running": 1, "queued": 1}
    assert report["not_terminal"] == sorted([stuck, queued]) and report["running"] == [stuck]
    assert report["running_in_table"] == 1 and report["duplicate_result_rows"] == 0
    assert report["result_mismatch"] == []
    job = report["jobs"][done]
    assert job["attempts"] == 2 and job["has_result"] and job["created"] <= job["finished"]
    assert report["jobs"][queued]["finished"] is None


def test_audit_counts_a_result_row_on_an_unfinished_job(engine, user):
    from app.store.audit import audit_jobs

    job_id = js.create_job(engine, user, "sum", {"numbers": [1]})["id"]
    with engine.begin() as conn:  # what a broken writer could leave behind
        conn.execute(results.insert().values(job_id=job_id, result="{}", created_at=js.utcnow()))
    assert audit_jobs(engine, [job_id])["result_mismatch"] == [job_id]


def test_jobs_audit_command_reads_ids_and_prints_json(make_app, store_url):
    import json

    app = make_app(store_url)
    uid, _token, _ = issue_token(app.extensions["joblab_db"].engine, "carol")
    job_id = js.create_job(app.extensions["joblab_db"].engine, uid, "sum", {"numbers": [2]})["id"]
    out = app.test_cli_runner().invoke(args=["jobs", "audit"], input="%s\n\nnope\n" % job_id)
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["ids"] == 2 and report["unknown"] == ["nope"] and report["not_terminal"] == [job_id]


def test_created_row_is_what_a_read_returns(engine, user):
    # Built from what was written (no read-back): all a read returns, but `seq` (the store's, and
    # never shown to clients).
    created = js.create_job(engine, user, "sum", {"numbers": [1, 2.5]})
    read = js.get_job(engine, created["id"])
    assert created["seq"] is None and read["seq"] >= 1
    assert dict(created, seq=read["seq"]) == read and created["status"] is JobStatus.QUEUED


# -- crash loops, rejected messages, quotas ---------------------------------------------------
def test_claims_of_a_running_job_count_crashes_until_attempts_are_used(engine, user):
    job_id = js.create_job(engine, user, "sleep", {"seconds": 1})["id"]
    first = js.claim_job(engine, job_id, max_attempts=3)
    assert (first["attempts"], first["crashes"], first["exhausted"]) == (1, 0, False)
    # The worker died mid-job twice: each redelivery finds it `running`.
    for n in (2, 3):
        again = js.claim_job(engine, job_id, max_attempts=3)
        assert (again["attempts"], again["crashes"], again["exhausted"]) == (n, n - 1, False)
    # A fourth delivery: all attempts died with their worker. Not claimed, not run.
    last = js.claim_job(engine, job_id, max_attempts=3)
    assert last["exhausted"] and last["status"] is JobStatus.RUNNING and last["attempts"] == 3
    assert js.store_failure(engine, job_id, "crashed the worker 3 times", attempt=3, crashed=True)
    done = js.get_job(engine, job_id)
    assert done["status"] is JobStatus.FAILED and done["crashes"] == 3 and done["error"] == "crashed the worker 3 times"
    assert js.claim_job(engine, job_id, max_attempts=3) is None


def test_a_retried_job_is_not_a_crash(engine, user):
    job_id = js.create_job(engine, user, "fail", {"message": "x"})["id"]
    for attempt in (1, 2, 3):
        claimed = js.claim_job(engine, job_id, max_attempts=3, attempt=attempt)
        assert not claimed["exhausted"] and claimed["crashes"] == 0 and claimed["attempts"] == attempt
        js.requeue_job(engine, job_id, attempt, "JobFailed: x")  # back to queued: a normal failed attempt


def test_reject_fails_queued_or_running_and_leaves_finished_jobs(engine, user):
    queued = js.create_job(engine, user, "sum", {"numbers": [1]})["id"]
    assert js.reject_job(engine, queued, "rejected message: bad")
    assert js.get_job(engine, queued)["status"] is JobStatus.FAILED
    done = js.create_job(engine, user, "sum", {"numbers": [1]})["id"]
    js.claim_job(engine, done)
    js.store_success(engine, done, '{"sum":1}')
    assert not js.reject_job(engine, done, "rejected message: bad")
    assert js.get_job(engine, done)["status"] is JobStatus.SUCCEEDED


def test_quota_counts_queued_and_running_of_that_user_only(engine, user):
    other, _, _ = issue_token(engine, "mallory")
    ids = [js.create_job(engine, user, "sleep", {"seconds": 1}, max_active=2)["id"] for _ in range(2)]
    js.create_job(engine, other, "sleep", {"seconds": 1}, max_active=2)
    with pytest.raises(js.QuotaExceeded) as info:
        js.create_job(engine, user, "sleep", {"seconds": 1}, max_active=2)
    assert info.value.active == 2
    js.claim_job(engine, ids[0])
    js.store_success(engine, ids[0], '{"slept":1}')
    assert js.create_job(engine, user, "sleep", {"seconds": 1}, max_active=2)["status"] is JobStatus.QUEUED


def test_sql_servers_data_errors_are_not_an_outage():
    import pymssql
    from sqlalchemy.exc import OperationalError

    from app.store import store_unavailable

    truncated = OperationalError("INSERT", {}, pymssql.OperationalError(8152, b"String or binary data would be truncated."))
    down = OperationalError("SELECT 1", {}, pymssql.OperationalError(20009, b"Unable to connect: Adaptive Server is unavailable"))
    assert not store_unavailable(truncated) and store_unavailable(down)
