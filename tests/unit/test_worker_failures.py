"""Every failure path of the worker, deterministically: the store or Kafka fails on cue at each
step of a job's outcome, and each ends as documented - no double dead letter, no attempt beyond
the limit, no `failed` for a succeeded job, no job run again for a failure after it ran, no
crash. (The real Worker, a real SQLite store, the scripted doubles of tests/unit/doubles.py.)"""
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from app.states import JobStatus
from app.store import jobs as js
from app.store import outbox as outbox_store
from app.store.schema import outbox
from tests.unit.doubles import TOPICS, Consumer, Queue, committed, handle, next_retry, submit
from worker.runner import Worker


def outbox_rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox)).scalar()


def store_down_once(monkeypatch, name):
    """The next call of app.store.jobs.<name> finds the database down; later calls work."""
    real = getattr(js, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    monkeypatch.setattr(js, name, flaky)
    return calls


@pytest.fixture
def counted(job_type):
    """Job type `flaky`: fails (JobFailed) while `fails` says so; counts its runs."""
    from app.jobtypes import JobFailed

    state = {"runs": 0, "fails": True}

    def run():
        state["runs"] += 1
        if state["fails"]:
            raise JobFailed("not yet")
        return {"ok": True}

    job_type("flaky", run)
    return state


# -- Kafka fails after the outcome was stored ------------------------------------------------------
def test_retry_not_published_is_sent_later_and_the_job_not_run_again(worker, engine, user, counted):
    job_id, value = submit(engine, user, "flaky", {})
    worker.queue.refuse(1, "jobs.retry")
    handle(worker, value)
    assert committed(worker) == [] and worker.paused_until  # not committed: Kafka did not take the retry
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.QUEUED and job["attempts"] == 1 and outbox_rows(engine) == 1
    handle(worker, value)  # the same record again, after the pause
    assert counted["runs"] == 1  # not run again: attempt 1 already ran; its retry went out first
    assert len(worker.queue.on("jobs.retry")) == 1 and committed(worker) == [1]
    retry = json.loads(worker.queue.on("jobs.retry")[0][2])
    assert retry["attempt"] == 2 and retry["not_before"] > 0  # with its backoff
    worker.housekeeping(idle=True)
    assert outbox_rows(engine) == 0  # published rows are deleted


def test_dead_letter_not_published_is_sent_once(worker, engine, user, counted):
    job_id, value = submit(engine, user, "flaky", {})
    handle(worker, value, 0)
    next_retry(worker, 1)
    worker.queue.refuse(1, "jobs.dead")
    next_retry(worker, 2)  # attempt 3 fails: the last; Kafka refuses the dead letter
    assert js.get_job(engine, job_id)["status"] is JobStatus.FAILED  # stored with its messages
    retry_record = worker.queue.on("jobs.retry")[-1][2]
    handle(worker, retry_record, 2, topic="jobs.retry")  # redelivered
    assert counted["runs"] == 3
    assert [d[1] for d in worker.queue.on("jobs.dead")] == [job_id]
    assert [json.loads(e[2])["status"] for e in worker.queue.on("jobs.failed")] == ["failed"]


# -- the store fails after the job ran -------------------------------------------------------------
def test_store_down_after_success_stores_it_later_without_running_again(worker, engine, user, counted, monkeypatch):
    counted["fails"] = False
    job_id, value = submit(engine, user, "flaky", {})
    store_down_once(monkeypatch, "store_success")
    handle(worker, value)
    assert committed(worker) == [] and js.get_job(engine, job_id)["status"] is JobStatus.RUNNING
    handle(worker, value)
    assert counted["runs"] == 1 and js.get_job(engine, job_id)["status"] is JobStatus.SUCCEEDED
    assert len(worker.queue.on("jobs.succeeded")) == 1 and committed(worker) == [1]


def test_store_down_when_giving_up_dead_letters_once(worker, engine, user, counted, monkeypatch):
    job_id, value = submit(engine, user, "flaky", {})
    handle(worker, value, 0)
    next_retry(worker, 1)
    store_down_once(monkeypatch, "store_failure")
    next_retry(worker, 2)  # the last attempt fails; the store is down as it records that
    assert worker.queue.on("jobs.dead") == [] and js.get_job(engine, job_id)["status"] is JobStatus.RUNNING
    handle(worker, worker.queue.on("jobs.retry")[-1][2], 2, topic="jobs.retry")
    job = js.get_job(engine, job_id)
    assert counted["runs"] == 3 and job["attempts"] == 3  # no fourth run, no attempt beyond the limit
    assert job["status"] is JobStatus.FAILED and job["error"] == "JobFailed: not yet"  # not "crashed"
    assert [d[1] for d in worker.queue.on("jobs.dead")] == [job_id]


def test_store_down_when_requeueing_keeps_the_attempt_count(worker, engine, user, counted, monkeypatch):
    job_id, value = submit(engine, user, "flaky", {})
    store_down_once(monkeypatch, "requeue_job")
    handle(worker, value)
    handle(worker, value)
    job = js.get_job(engine, job_id)
    assert counted["runs"] == 1 and job["status"] is JobStatus.QUEUED and job["attempts"] == 1
    assert len(worker.queue.on("jobs.retry")) == 1


def test_store_down_when_claiming_pauses_and_runs_nothing(worker, engine, user, counted, monkeypatch):
    _job_id, value = submit(engine, user, "flaky", {})
    store_down_once(monkeypatch, "claim_job")
    handle(worker, value)
    assert counted["runs"] == 0 and committed(worker) == [] and worker.paused_until


# -- two deliveries of one job ---------------------------------------------------------------------
def test_a_late_failure_never_fails_a_job_another_delivery_finished(engine, user, job_type):
    """Delivery A runs the job; meanwhile delivery B (a rebalance's redelivery) claims and finishes
    it; then A's attempt fails - its last. A must record nothing and send nothing."""
    a = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=1)
    b = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    from app.jobtypes import JobFailed

    runs = []

    def race():
        runs.append(1)
        if len(runs) == 1:
            handle(b, value)  # B's delivery, while A's is still running
            raise JobFailed("A's attempt fails after B finished")
        return {"by": "B"}

    job_type("race", race)
    job_id, value = submit(engine, user, "race", {})
    handle(a, value)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.SUCCEEDED and js.get_result(engine, job_id) == {"by": "B"}
    assert a.queue.on("jobs.dead") == [] and a.queue.on("jobs.failed") == [] and a.queue.on("jobs.retry") == []
    assert len(b.queue.on("jobs.succeeded")) == 1


def test_a_late_retry_never_requeues_a_job_another_delivery_claimed(engine, user, job_type):
    a = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    b = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    from app.jobtypes import JobFailed

    runs = []

    def race():
        runs.append(1)
        if len(runs) == 1:
            handle(b, value)
        raise JobFailed("run %d" % len(runs))

    job_type("race", race)
    job_id, value = submit(engine, user, "race", {})
    handle(a, value)
    # B claimed last (attempt 2): its failure is the one recorded; A's earlier one sends nothing.
    assert a.queue.on("jobs.retry") == [] and len(b.queue.on("jobs.retry")) == 1
    assert json.loads(b.queue.on("jobs.retry")[0][2])["attempt"] == 3
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.QUEUED and job["attempts"] == 2 and job["error"] == "JobFailed: run 2"


def test_an_attempt_outcome_counts_only_while_it_is_the_latest_claim(engine, user, job_type):
    """A redelivery claims the job while this delivery still runs it; this delivery then fails:
    the later claim is in charge, so nothing is recorded or sent for the earlier one."""
    a = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    from app.jobtypes import JobFailed

    def race():
        js.claim_job(engine, job_id)  # another delivery claims it now (attempt 2)
        raise JobFailed("attempt 1 fails late")

    job_type("race", race)
    job_id, value = submit(engine, user, "race", {})
    handle(a, value)
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.RUNNING and job["attempts"] == 2 and job["error"] is None
    assert a.queue.sent == []


def test_redelivered_message_of_an_attempt_that_ran_is_skipped(worker, engine, user, counted):
    job_id, value = submit(engine, user, "flaky", {})
    handle(worker, value, 0)
    handle(worker, value, 0)  # e.g. its offset commit was lost to a broker restart
    assert counted["runs"] == 1 and len(worker.queue.on("jobs.retry")) == 1 and committed(worker) == [1, 1]


# -- retry times ------------------------------------------------------------------------------------
@pytest.mark.parametrize("not_before", [b"Infinity", b"1e18", b"1e300"])
def test_absurd_not_before_never_pauses_a_partition(worker, engine, user, not_before):
    job_id, _ = submit(engine, user, "noop", {})
    value = b'{"v":1,"job_id":"%s","type":"noop","args":{},"attempt":2,"not_before":%s}' % (job_id.encode(), not_before)
    handle(worker, value, topic="jobs.retry", key=job_id.encode())
    assert worker.paused_until == {} and committed(worker) == [1]
    assert js.get_job(engine, job_id)["status"] is JobStatus.FAILED


# -- the outbox relay ---------------------------------------------------------------------------------
def test_messages_of_a_worker_that_died_are_published_once_by_another(engine, user, counted):
    dead = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    job_id, value = submit(engine, user, "flaky", {})
    dead.queue.refuse(10)
    handle(dead, value)  # stored, retry in the outbox, never published: then the worker "dies"
    heir = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    assert heir.publisher.relay() == 0  # the writer's lease still runs
    with engine.begin() as conn:
        conn.execute(update(outbox).values(lease_until=outbox.c.created_at - timedelta(seconds=1)))
    assert heir.publisher.relay() == 1 and [r[1] for r in heir.queue.on("jobs.retry")] == [job_id]
    assert heir.publisher.relay() == 0  # taken once
    # The first worker comes back: the row is no longer its own, so it does not publish it again.
    dead.queue.refusals.clear()
    dead.publisher.flush()
    assert dead.queue.on("jobs.retry") == []
    heir.housekeeping(idle=True)
    assert outbox_rows(engine) == 0


def test_two_workers_picking_the_same_abandoned_row_take_it_once(engine):
    with engine.begin() as conn:
        ids = [i for i, _m in outbox_store.add(conn, "w1", [outbox_store.Message("jobs.dead", "k", b"v")],
                                                   lease_seconds=-1)]
    # Both picked the row while its lease had run out; w2 takes it first.
    with engine.begin() as conn:
        assert len(outbox_store.take(conn, ids, "w2", 60)) == 1
    with engine.begin() as conn:
        assert outbox_store.take(conn, ids, "w3", 60) == []


def test_a_message_its_dead_writer_published_before_deleting_its_row_is_not_sent_again(engine):
    # Found by `make drills`: a worker SIGKILLed between Kafka's ack and the delete of the row
    # left a row that looked unpublished; the heir published a second dead letter.
    from worker.publisher import Publisher

    kafka = []
    with engine.begin() as conn:
        rows = outbox_store.add(conn, "dead-worker", [outbox_store.Message("jobs.dead", "k1", b"v1"),
                                                      outbox_store.Message("jobs.dead", "k2", b"v2")], lease_seconds=-1)
    _row, first = rows[0]
    Queue(kafka).send(first.topic, first.key, first.value, first.headers)  # acknowledged; then the kill
    heir = Publisher(engine, Queue(kafka))
    assert heir.relay() == 2
    assert [key for _t, key, _v, _h in kafka] == ["k1", "k2"]  # k1 once (its writer's), k2 by the heir
    assert outbox_rows(engine) == 0 and heir.queue.lookups


def test_a_message_written_though_its_ack_was_lost_is_not_sent_again(engine):
    from worker.errors import KafkaUnavailable
    from worker.publisher import Publisher

    queue = Queue()
    publisher = Publisher(engine, queue)
    publisher.deferred = True
    publisher.conclude(lambda conn: True, [outbox_store.Message("jobs.dead", k, b"v") for k in ("a", "b", "c")])
    queue.lose_acks(1)  # "a" is written, its ack lost (a broker restart)...
    queue.refuse_acks(1)  # ...and "b" never written
    with pytest.raises(KafkaUnavailable):
        publisher.wait()
    publisher.deferred = False
    queue.lookups_refused = 1  # Kafka cannot tell yet: nothing is sent
    with pytest.raises(KafkaUnavailable):
        publisher.flush()
    assert [k for _t, k, _v, _h in queue.sent] == ["a", "c"]
    publisher.flush()
    assert [k for _t, k, _v, _h in queue.sent] == ["a", "c", "b"] and outbox_rows(engine) == 0
    publisher.conclude(lambda conn: True, [outbox_store.Message("jobs.dead", "d", b"v")])
    assert len(queue.lookups) == 2  # only rows in doubt are looked up


# -- stranded jobs -------------------------------------------------------------------------------------
def age(engine, job_id, seconds):
    with engine.begin() as conn:
        conn.execute(update(js.jobs).where(js.jobs.c.id == job_id).values(
            updated_at=js.utcnow() - timedelta(seconds=seconds)))


def test_sweep_sends_a_job_that_was_never_enqueued_and_it_runs_once(worker, engine, user):
    from worker.sweep import sweep

    job_id = js.create_job(engine, user, "noop", {})["id"]  # committed; the API died before producing
    worker.consumer.lags = {"jobs": {0: 0, 1: 0}, "jobs.retry": {0: 0, 1: 0}}
    assert sweep(worker, 600) == 0  # too recent to tell
    age(engine, job_id, 601)
    assert sweep(worker, 600) == 0  # first seen: where its partitions end is noted
    assert sweep(worker, 600) == 1  # the group is past those ends, the job still queued
    assert sweep(worker, 600) == 0  # touched: not sent twice
    [(topic, key, value, _h)] = worker.queue.sent
    assert (topic, key, json.loads(value)["attempt"]) == ("jobs", job_id, 1)
    handle(worker, value, offset=0)
    handle(worker, value, offset=1)  # had its first message existed after all: harmless
    job = js.get_job(engine, job_id)
    assert job["status"] is JobStatus.SUCCEEDED and job["attempts"] == 1


def test_sweep_resends_a_lost_retry_and_leaves_jobs_whose_message_may_wait(worker, engine, user):
    from app.published import partition_of
    from worker.sweep import sweep

    lost = js.create_job(engine, user, "noop", {})["id"]
    js.claim_job(engine, lost)
    js.requeue_job(engine, lost, 1, "JobFailed: x")  # its retry message was never written
    # A job on another partition, which still has unconsumed records (ids are random: try a few).
    waiting = next(j for j in (js.create_job(engine, user, "noop", {})["id"] for _ in range(50))
                   if partition_of(j, 4) != partition_of(lost, 4))
    for job_id in (lost, waiting):
        age(engine, job_id, 601)
    lags = dict.fromkeys(range(4), 0)
    lags[partition_of(waiting, 4)] = 5
    worker.consumer.lags = {"jobs": lags, "jobs.retry": dict.fromkeys(range(4), 0)}
    assert sweep(worker, 600) == 0  # first sight of both
    assert sweep(worker, 600) == 1
    assert [r[1] for r in worker.queue.on("jobs.retry")] == [lost]
    assert json.loads(worker.queue.on("jobs.retry")[0][2])["attempt"] == 2
    assert js.get_job(engine, waiting)["status"] is JobStatus.QUEUED
    assert sweep(worker, 600) == 0 and sweep(worker, 600) == 0  # touched: not sent twice


# -- found in review: each message once, whatever fails when --------------------------------------
def test_kafka_down_past_the_lease_on_an_idle_worker_sends_each_message_once(worker, engine, user, counted):
    job_id, value = submit(engine, user, "flaky", {})
    worker.queue.refuse(1000)
    handle(worker, value)  # stored with its retry; Kafka refuses the retry
    with engine.begin() as conn:  # the outage outlasts the lease
        conn.execute(update(outbox).values(lease_until=outbox.c.created_at - timedelta(seconds=1)))
    assert worker.publisher.relay() == 0  # its own row is not taken over a second time
    worker.relay_timer.next_at = 0  # the relay is due while the worker idles
    worker.housekeeping(idle=True)  # renews its own lease (flush), relay takes nothing
    assert len(worker.publisher.unsent) == 1
    worker.queue.refusals.clear()  # Kafka is back
    worker.housekeeping(idle=True)  # idle: flushed from housekeeping, and the row deleted
    assert [r[1] for r in worker.queue.on("jobs.retry")] == [job_id] and outbox_rows(engine) == 0


def test_a_poison_records_dead_letter_refused_by_kafka_goes_out_once(worker, engine, user):
    job_id, _ = submit(engine, user, "noop", {})
    bad = b'{"job_id": "%s", "type": "noop", "args": {}, "attempt": "x"}' % job_id.encode()
    worker.queue.refuse(1, "jobs.dead")
    handle(worker, bad, key=job_id.encode())
    assert committed(worker) == [] and js.get_job(engine, job_id)["status"] is JobStatus.FAILED
    handle(worker, bad, key=job_id.encode())  # the same record again, after the pause
    assert [d[1] for d in worker.queue.on("jobs.dead")] == [job_id] and committed(worker) == [1]
    assert [json.loads(e[2])["status"] for e in worker.queue.on("jobs.failed")] == ["failed"]


def test_published_rows_are_deleted_when_the_worker_stops(worker, engine, user, counted):
    from kafka.structs import TopicPartition

    from tests.unit.doubles import Record

    counted["fails"] = False
    _job_id, value = submit(engine, user, "flaky", {})
    worker.consumer.batches = [{TopicPartition("jobs", 0): [Record("jobs", 0, 0, value, None)]}]
    worker.run(max_messages=1)
    assert len(worker.queue.on("jobs.succeeded")) == 1 and outbox_rows(engine) == 0 and worker.consumer.closed


def test_an_older_attempts_message_never_takes_a_job_a_newer_attempt_runs(worker, engine, user, counted):
    job_id, value = submit(engine, user, "flaky", {})  # attempt 1's message
    handle(worker, value, 0)  # attempt 1 fails; its retry (attempt 2) is published
    js.claim_job(engine, job_id, 3, attempt=2)  # attempt 2 is running on another worker
    handle(worker, value, 1)  # attempt 1's message again (another consumer, a replay)
    job = js.get_job(engine, job_id)
    assert counted["runs"] == 1 and job["status"] is JobStatus.RUNNING and job["attempts"] == 2
    assert job["crashes"] == 0 and worker.queue.on("jobs.dead") == []


def test_a_message_kafka_can_never_take_does_not_stall_the_worker(worker, engine, user):
    from kafka.errors import MessageSizeTooLargeError

    worker.queue.refuse(1, "jobs.dead", MessageSizeTooLargeError())
    handle(worker, b"\\xff" * 10)  # poison: its dead letter is refused as too large, for good
    assert committed(worker) == [1] and worker.publisher.unsent == []
    job_id, value = submit(engine, user, "noop", {})
    handle(worker, value, 1)
    assert js.get_job(engine, job_id)["status"] is JobStatus.SUCCEEDED
    worker.housekeeping(idle=True)
    assert outbox_rows(engine) == 0  # dropped for good: its row is not left for a relay to retry


def test_dead_letters_of_huge_records_are_cut_and_say_so():
    from worker.publisher import DEAD_LETTER_VALUE_MAX, dead_letter
    from tests.unit.doubles import Record

    letter = dead_letter("jobs.dead", Record("jobs", 0, 7, b"x" * (DEAD_LETTER_VALUE_MAX + 10), None), "poison", "big")
    assert len(letter.value) == DEAD_LETTER_VALUE_MAX and dict(letter.headers)["truncated"] == str(DEAD_LETTER_VALUE_MAX + 10).encode()


def test_two_sweeping_workers_settle_a_job_once(worker, engine, user):
    from worker.sweep import sweep

    other = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3)
    job_id = js.create_job(engine, user, "noop", {})["id"]
    js.claim_job(engine, job_id)
    js.requeue_job(engine, job_id, 1, "JobFailed: x")
    age(engine, job_id, 601)
    for w in (worker, other):
        w.consumer.lags = {"jobs": {0: 0}, "jobs.retry": {0: 0}}
        assert sweep(w, 600) == 0
    assert sweep(worker, 600) + sweep(other, 600) == 1
    assert len(worker.queue.on("jobs.retry") + other.queue.on("jobs.retry")) == 1


def test_one_odd_row_does_not_stop_the_sweep(worker, engine, user):
    from worker.sweep import sweep

    odd = js.create_job(engine, user, "noop", {})["id"]
    js.claim_job(engine, odd)
    js.requeue_job(engine, odd, 1, "x")
    with engine.begin() as conn:  # args no JSON parser reads: settling it raises
        conn.execute(update(js.jobs).where(js.jobs.c.id == odd).values(args="{not json"))
    fine = js.create_job(engine, user, "noop", {})["id"]
    for job_id in (odd, fine):
        age(engine, job_id, 601)
    worker.consumer.lags = {"jobs": {0: 0}, "jobs.retry": {0: 0}}
    sweep(worker, 600)
    assert sweep(worker, 600) == 1
    assert [key for _t, key, _v, _h in worker.queue.on("jobs")] == [fine]


def test_nothing_published_is_left_in_the_outbox_after_a_job(worker, engine, user, counted):
    # A worker SIGKILLed right after a job leaves no published row for the relay to send again.
    _job_id, value = submit(engine, user, "flaky", {})
    handle(worker, value)
    assert len(worker.queue.on("jobs.retry")) == 1 and outbox_rows(engine) == 0


def test_poll_errors_are_ridden_out_then_given_up(worker, engine, user, counted, monkeypatch):
    from kafka.errors import KafkaError, NodeNotReadyError
    from kafka.structs import TopicPartition

    from tests.unit.doubles import Record
    from worker import defaults

    monkeypatch.setattr(defaults, "INFRA_RETRY_SECONDS", 0)
    monkeypatch.setattr(defaults, "POLL_FAILURES_MAX", 3)
    counted["fails"] = False
    _job_id, value = submit(engine, user, "flaky", {})
    polls = [NodeNotReadyError("broker restarting"), NodeNotReadyError("still"),
             {TopicPartition("jobs", 0): [Record("jobs", 0, 0, value, None)]}]

    def poll(timeout_ms=0, max_records=1):
        item = polls.pop(0) if polls else NodeNotReadyError("gone for good")
        if isinstance(item, Exception):
            raise item
        return item

    worker.consumer.poll = poll
    assert worker.run(max_messages=1) == 1 and counted["runs"] == 1  # two failed polls ridden out
    worker.stopping = False
    with pytest.raises(KafkaError):  # a consumer that keeps failing: exit, supervisor restarts
        worker.run()
