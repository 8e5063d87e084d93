"""The worker's handling of one record, against a real SQLite store and a recording Kafka double:
no job and no message can raise out of Worker.handle. Every hostile shape ends committed, with
the job failed (or retried) and the message dead-lettered, or paused when the store is down."""
import json
import logging
import sys

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from app.logsetup import FORMAT, OneLineFormatter
from app.states import JobStatus
from app.store import jobs as js
from tests.unit.doubles import NOW, committed, handle, next_retry, submit

# -- results that are not strict JSON -----------------------------------------------------------
@pytest.mark.parametrize("result", [float("nan"), {"sum": float("inf")}, {"n": 10 ** 5000}, {"at": object()},
                                    "x" * (300 * 1024)])
def test_unserialisable_result_fails_the_attempt_not_the_worker(worker, engine, user, job_type, result):
    job_type("hostile_result", lambda: result)
    job_id, value = submit(engine, user, "hostile_result", {})
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.QUEUED and job["error"].startswith("ResultInvalid: result ")
    assert len(worker.queue.on("jobs.retry")) == 1 and committed(worker) == [1]


def test_last_attempt_with_unserialisable_result_dead_letters(worker, engine, user, job_type):
    job_type("hostile_result", lambda: float("nan"))
    job_id, value = submit(engine, user, "hostile_result", {})
    handle(worker, value, 0)
    for offset in (1, 2):
        next_retry(worker, offset)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.FAILED and job["attempts"] == 3 and "not valid JSON" in job["error"]
    assert [s[1] for s in worker.queue.on("jobs.dead")] == [job_id]
    assert json.loads(worker.queue.on("jobs.failed")[0][2])["status"] == "failed"


@pytest.mark.parametrize("exc", [SystemExit(0), SystemExit(3), RecursionError("deep"), MemoryError()])
def test_a_job_cannot_exit_the_worker(worker, engine, user, job_type, exc):
    def job():
        raise exc

    job_type("exits", job)
    job_id, value = submit(engine, user, "exits", {})
    handle(worker, value)
    assert js.get_job(engine, job_id)["error"].startswith(exc.__class__.__name__)
    assert committed(worker) == [1]


# -- messages that are not what a producer of ours writes ----------------------------------------
def raw_job(job_id, **fields):
    body = {"v": 1, "job_id": job_id, "type": "sum", "args": {"numbers": [1]}, "attempt": 2}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize("mangle, why", [
    (lambda v: v.replace(b'"attempt": 2', b'"attempt": 2, "not_before": Infinity'), "Infinity"),
    (lambda v: v.replace(b'"attempt": 2', b'"attempt": 2, "not_before": NaN'), "NaN"),
    (lambda v: v.replace(b'"attempt": 2', b'"attempt": 2, "not_before": %d' % (NOW + 10 ** 9)), "ahead"),
    (lambda v: v.replace(b'"attempt": 2', b'"attempt": "2"'), "attempt"),
    (lambda v: v.replace(b'"args": {', b'"args": {"deep": %s%s, ' % (b"[" * 20000, b"]" * 20000)), "deeply"),
])
def test_hostile_retry_message_fails_its_job_and_never_stalls(worker, engine, user, mangle, why):
    job_id, _ = submit(engine, user, "sum", {"numbers": [1]})
    handle(worker, mangle(raw_job(job_id)), topic="jobs.retry", key=job_id.encode())
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.FAILED and job["error"].startswith("rejected message:") and why in job["error"]
    dead = worker.queue.on("jobs.dead")
    assert [d[1] for d in dead] == [job_id] and why in dead[0][3]["error"].decode()
    assert committed(worker) == [1] and worker.paused_until == {}  # not paused until some far day


@pytest.mark.parametrize("value", [b"\xff\xfe", b"[" * 100000, b'{"job_id": "a\\nb"}', b"null", b"{}" * 3])
def test_message_naming_no_job_is_dead_lettered_as_poison(worker, value):
    handle(worker, value)
    assert [d[1] for d in worker.queue.on("jobs.dead")] == ["poison"] and committed(worker) == [1]


# -- crash loops ---------------------------------------------------------------------------------
def test_job_that_crashed_every_attempt_is_failed_not_run(worker, engine, user, job_type):
    runs = []
    job_type("killer", lambda: runs.append(1))
    job_id, value = submit(engine, user, "killer", {})
    for _ in range(3):  # three workers claimed it and died mid-job (nothing after the claim happened)
        js.claim_job(engine, job_id, max_attempts=3)
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert runs == [] and job["status"] is JobStatus.FAILED and job["error"] == "crashed the worker 3 times"
    dead = worker.queue.on("jobs.dead")
    assert [d[1] for d in dead] == [job_id] and dead[0][3]["error"] == b"crashed the worker 3 times"
    assert committed(worker) == [1]


# -- the store: down means wait, bad data means fail ------------------------------------------------
def test_store_down_pauses_without_commit(worker, engine, user, monkeypatch):
    job_id, value = submit(engine, user, "sum", {"numbers": [1]})
    def down(*_a):
        raise OperationalError("UPDATE", {}, Exception("connection refused"))

    monkeypatch.setattr(js, "store_success", down)
    handle(worker, value)
    assert committed(worker) == [] and worker.paused_until  # the same message comes back later
    assert js.get_job(engine, job_id)["status"] is JobStatus.RUNNING


@pytest.mark.parametrize("exc", [IntegrityError("INSERT", {}, Exception("dup")), RuntimeError("a bug"),
                                 KeyError("result")])
def test_unexpected_error_fails_the_job_and_the_worker_goes_on(worker, engine, user, monkeypatch, exc):
    job_id, value = submit(engine, user, "sum", {"numbers": [1]})

    def broken(*_a):
        raise exc

    monkeypatch.setattr(js, "store_success", broken)
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.FAILED and job["error"].startswith("worker error: " + exc.__class__.__name__)
    assert [d[1] for d in worker.queue.on("jobs.dead")] == [job_id] and committed(worker) == [1]


# -- logs ------------------------------------------------------------------------------------------
def test_user_text_cannot_forge_a_log_line(worker, engine, user, caplog):
    forged = "boom\n2026-11-28 10:00:00,000 INFO worker[1]: job x: running -> succeeded"
    job_id, value = submit(engine, user, "fail", {"message": forged})
    with caplog.at_level(logging.INFO, logger="worker"):
        handle(worker, value)
    formatter = OneLineFormatter(FORMAT)
    lines = [formatter.format(r) for r in caplog.records]
    assert any("attempt 1 failed" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_formatter_keeps_tracebacks_under_their_line():
    formatter = OneLineFormatter(FORMAT)
    try:
        raise ValueError("x\n2026-11-28 10:00:00,000 INFO forged")
    except ValueError:
        record = logging.LogRecord("worker", logging.ERROR, __file__, 1, "job %s\nforged", ("a",), sys.exc_info())
    first, *rest = formatter.format(record).splitlines()
    assert first.endswith("job a\\nforged") and rest and all(line.startswith("    | ") for line in rest)
