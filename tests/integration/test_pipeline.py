"""The job path for real: Flask app -> Kafka broker -> Worker -> SQLite / PostgreSQL."""
from __future__ import annotations

import json
import threading
import time

from sqlalchemy import func, select

from app.messages import encode_job
from app.store import jobs as js
from app.store.schema import results
from app.store.users import user_for_token

pytestmark = __import__("pytest").mark.integration


def result_rows(stack, job_id):
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(results).where(results.c.job_id == job_id)).scalar()


def events(stack, topic, job_id, wanted=1, seconds=15):
    """The job's events on ``topic``, once there are ``wanted`` (they are published just after the
    outcome is committed, which a poll of the job may see first), or what there is after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = [json.loads(r.value) for r in stack.read_topic(topic) if r.key == job_id.encode()]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_sum_job_end_to_end(stack):
    job_id = stack.submit("sum", {"numbers": [1, 2, 3.5]})
    assert stack.job(job_id)["status"] == "queued"
    stack.start_worker()
    job = stack.wait_status(job_id, "succeeded")
    assert job["attempts"] == 1 and job["started_at"] and job["finished_at"] and job["error"] is None
    assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).get_json()["result"] == {"sum": 6.5}
    assert [e["status"] for e in events(stack, stack.topics.succeeded, job_id)] == ["succeeded"]
    assert result_rows(stack, job_id) == 1


def test_running_state_is_visible_while_a_job_runs(stack, job_type):
    # The worker runs in this process: the job holds until the test has seen it running.
    seen = threading.Event()
    job_type("gate", lambda: {"held": seen.wait(60)})
    job_id = stack.submit("gate", {})
    stack.start_worker()
    running = stack.wait_status(job_id, "running", "succeeded")
    assert running["status"] == "running" and running["started_at"] and running["finished_at"] is None
    assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).status_code == 409
    seen.set()
    assert stack.wait_status(job_id, "succeeded")["status"] == "succeeded"
    assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).get_json()["result"] == {"held": True}


def test_failing_job_is_retried_then_dead_lettered(stack):
    job_id = stack.submit("fail", {"message": "boom"})
    stack.start_worker()
    job = stack.wait_status(job_id, "failed")
    assert job["attempts"] == 3 and job["error"] == "JobFailed: boom"
    retries = [json.loads(r.value) for r in stack.read_topic(stack.topics.retry) if r.key == job_id.encode()]
    assert [m["attempt"] for m in retries] == [2, 3]
    assert all(m["not_before"] > m["sent_at"] for m in retries)  # backed off, not immediate
    dead = [r for r in stack.read_topic(stack.topics.dead) if r.key == job_id.encode()]
    assert len(dead) == 1 and dict(dead[0].headers)["error"] == b"JobFailed: boom"
    assert json.loads(dead[0].value)["job_id"] == job_id
    assert [e["attempts"] for e in events(stack, stack.topics.failed, job_id)] == [3]
    assert result_rows(stack, job_id) == 0
    assert stack.client.get("/v1/jobs/%s/result" % job_id, headers=stack.user).status_code == 409


def test_many_retries_interleaved_with_other_jobs_all_finish(make_stack, sqlite_url):
    # Regression (found by `make drills`): once a paused retry partition had records parked by
    # kafka-python, it was never fetched again and every later retry on it stayed queued.
    stack = make_stack(sqlite_url, RETRY_BACKOFF=0.1, RETRY_BACKOFF_MAX=0.2)
    ids = [stack.submit("fail", {"message": "f%d" % i}) if i % 5 == 0 else stack.submit("sum", {"numbers": [i]})
           for i in range(100)]
    stack.start_worker()
    for n, job_id in enumerate(ids):
        stack.wait_status(job_id, "failed" if n % 5 == 0 else "succeeded", timeout=60)


def test_cancelled_job_is_skipped_by_the_worker(make_stack, db_url):
    # One partition: the marker job is behind the cancelled one, so seeing it done means the
    # worker has been past the cancelled job's message.
    stack = make_stack(db_url, KAFKA_PARTITIONS=1)
    job_id = stack.submit("sleep", {"seconds": 5})
    assert stack.client.post("/v1/jobs/%s/cancel" % job_id, headers=stack.user).status_code == 200
    after = stack.submit("sum", {"numbers": [1]})
    wt = stack.start_worker()
    stack.wait_status(after, "succeeded")
    job = stack.job(job_id)
    assert job["status"] == "cancelled" and job["attempts"] == 0
    assert wt.worker.executions == 1  # only the sum job ran
    assert result_rows(stack, job_id) == 0


def test_redelivered_finished_job_is_skipped(make_stack, db_url):
    stack = make_stack(db_url, KAFKA_PARTITIONS=1)  # the marker follows the duplicate
    job_id = stack.submit("sum", {"numbers": [2, 2]})
    wt = stack.start_worker()
    stack.wait_status(job_id, "succeeded")
    executions = wt.worker.executions
    # The same message again, as Kafka would redeliver it after a crash before the commit.
    job = stack.job(job_id)
    stack.produce_raw(stack.topics.jobs, job_id, encode_job(job_id, job["type"], {"numbers": [2, 2]}))
    marker = stack.submit("sum", {"numbers": [0]})
    stack.wait_status(marker, "succeeded")
    assert wt.worker.executions == executions + 1  # the marker ran; the duplicate did not
    assert result_rows(stack, job_id) == 1 and stack.job(job_id)["attempts"] == 1
    # The succeeded event went out with the outcome (the outbox): once, not again on redelivery.
    assert len(events(stack, stack.topics.succeeded, job_id)) == 1


def test_a_new_group_replaying_everything_changes_nothing(make_stack, db_url):
    stack = make_stack(db_url, KAFKA_PARTITIONS=1)  # the marker is read after every replayed job
    ids = [stack.submit("sum", {"numbers": [i]}) for i in range(4)]
    stack.start_worker()
    for job_id in ids:
        stack.wait_status(job_id, "succeeded")
    stack.close()
    stack.threads.clear()
    stack.settings["KAFKA_GROUP"] += "-replay"  # no committed offsets: reads from the earliest
    wt = stack.start_worker()
    marker = stack.submit("sum", {"numbers": [9]})
    stack.wait_status(marker, "succeeded")
    assert wt.worker.executions == 1
    assert [result_rows(stack, j) for j in ids] == [1, 1, 1, 1]


def test_poison_message_is_dead_lettered_and_the_partition_moves_on(make_stack, db_url):
    # One partition, so the poison message sits right in front of the later job.
    stack = make_stack(db_url, KAFKA_PARTITIONS=1)
    stack.produce_raw(stack.topics.jobs, "poison", b"\x00not json")
    stack.produce_raw(stack.topics.jobs, "orphan", encode_job("no-such-job", "sum", {"numbers": [1]}))
    job_id = stack.submit("sum", {"numbers": [5]})
    stack.start_worker()
    stack.wait_status(job_id, "succeeded")
    dead = stack.read_topic(stack.topics.dead)
    reasons = {r.key: dict(r.headers)["error"].decode() for r in dead}
    assert "undecodable" in reasons[b"poison"] and reasons[b"no-such-job"] == "unknown job id"
    assert [r.value for r in dead if r.key == b"poison"] == [b"\x00not json"]


def test_hostile_messages_fail_their_jobs_and_the_worker_lives_on(make_stack, db_url):
    """What reached Kafka without the API's checks (a bug, a replayed or hand-written record):
    each hostile record fails its job and is dead-lettered; the same worker runs the next job."""
    stack = make_stack(db_url, KAFKA_PARTITIONS=1)
    user = user_for_token(stack.engine, stack.user["Authorization"].split()[1])[0]
    ids = [js.create_job(stack.engine, user, "sum", {"numbers": [1]})["id"] for _ in range(3)]
    inf_retry = encode_job(ids[0], "sum", {"numbers": [1]}, attempt=2, not_before=1.0).replace(
        b'"not_before":1.0', b'"not_before":Infinity')
    stack.produce_raw(stack.topics.retry, ids[0], inf_retry)
    stack.produce_raw(stack.topics.retry, ids[1], encode_job(ids[1], "sum", {"numbers": [1]}, attempt=2,
                                                             not_before=time.time() + 10 ** 9))
    stack.produce_raw(stack.topics.jobs, ids[2], b'{"job_id": "%s", "args": %s}' % (
        ids[2].encode(), b"[" * 30000 + b"]" * 30000))
    # Args the API would refuse, straight into the store: the worker validates them again.
    huge = js.create_job(stack.engine, user, "sum", {"numbers": [10 ** 4000, 10 ** 4000]})["id"]
    stack.produce_raw(stack.topics.jobs, huge, encode_job(huge, "sum", {"numbers": [1]}))
    wt = stack.start_worker()
    for job_id in ids + [huge]:
        assert stack.wait_status(job_id, "failed", timeout=60)["status"] == "failed"
    after = stack.submit("sum", {"numbers": [2, 3]})
    stack.wait_status(after, "succeeded")
    assert wt.thread.is_alive() and wt.error is None
    errors = [stack.job(i)["error"] for i in ids + [huge]]
    assert "Infinity" in errors[0] and "ahead" in errors[1] and "nested too deeply" in errors[2]
    assert errors[3].startswith("ValidationError")
    dead = {r.key.decode() for r in stack.read_topic(stack.topics.dead)}
    assert set(ids + [huge]) <= dead


def test_readiness_follows_the_broker(make_stack, db_url, broker):
    stack = make_stack(db_url)
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok", "kafka": "ok"}
    broker.stop()
    try:
        down = stack.client.get("/readyz")
        assert down.status_code == 503 and down.get_json()["failed"] == ["kafka"]
        resp = stack.client.post("/v1/jobs", json={"type": "sum", "args": {"numbers": [1]}}, headers=stack.user)
        assert resp.status_code == 503
        assert stack.job(resp.get_json()["id"])["status"] == "failed"  # not left looking queued
    finally:
        broker.start()
    assert stack.client.get("/readyz").status_code == 200


def test_sweep_settles_jobs_whose_message_is_nowhere_on_the_real_broker(make_stack, db_url):
    from datetime import timedelta

    from sqlalchemy import update

    from app.store.schema import jobs
    from app.store.users import utcnow
    from worker.main import build_worker
    from worker.sweep import sweep

    stack = make_stack(db_url, KAFKA_PARTITIONS=1)
    done = stack.submit("sum", {"numbers": [1]})
    stack.start_worker()
    stack.wait_status(done, "succeeded")
    stack.close()  # the group has consumed (and committed) everything
    stack.threads.clear()
    user = user_for_token(stack.engine, stack.user["Authorization"].split()[1])[0]
    orphan = js.create_job(stack.engine, user, "noop", {})["id"]  # the API died before producing
    with stack.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == orphan).values(updated_at=utcnow() - timedelta(seconds=700)))
    worker = build_worker(dict(stack.settings))
    try:
        assert sweep(worker, 600) == 0  # first sight: where its partitions end is noted
        assert sweep(worker, 600) == 1  # the group is past them: no message of it anywhere; sent
        stack.start_worker()
        stack.wait_status(orphan, "succeeded")
        # A job whose message does wait on the topic is left alone, however old.
        waiting = stack.submit("noop", {})
        with stack.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == waiting).values(updated_at=utcnow() - timedelta(seconds=700)))
        assert sweep(worker, 600) == 0 and sweep(worker, 600) == 0 and stack.job(waiting)["status"] == "queued"
    finally:
        worker.consumer.close(autocommit=False)
        worker.queue.close()
        worker.engine.dispose()


def test_nul_bytes_are_data_not_store_errors(stack):
    # PostgreSQL refuses NUL in text columns: a path or an error carrying one must not reach it.
    for path in ("/v1/jobs/%00", "/v1/jobs/a%00b/result", "/v1/jobs/%00/cancel"):
        method = stack.client.post if path.endswith("cancel") else stack.client.get
        assert method(path, headers=stack.user).status_code == 404
    job_id = stack.submit("fail", {"message": "nul \u0000 inside"})
    stack.start_worker()
    job = stack.wait_status(job_id, "failed")
    assert job["error"] == "JobFailed: nul \\x00 inside" and job["attempts"] == 3  # retried: the job's failure
