"""The worker in batches (handle_batch): the records of one poll share one wait for Kafka's acks
and one offset commit, and every promise of the one-record path holds - an offset is committed
only after its job's outcome is stored and its messages acknowledged, a failure is one job's
alone, a record that comes back after Kafka failed is never run again. (The real Worker, a real
SQLite store, the scripted doubles of tests/unit/doubles.py.)"""
import json

import pytest
from kafka.structs import TopicPartition

from app.states import JobStatus
from app.store import jobs as js
from tests.unit.doubles import NOW, Record, submit
from worker import defaults


def batch_of(engine, user, job_type="noop", args=None, partitions=(0,), per_partition=3, topic="jobs"):
    """``per_partition`` new jobs on each partition: the poll's batch, and the job ids in order."""
    batch, ids = {}, []
    for p in partitions:
        tp = TopicPartition(topic, p)
        batch[tp] = []
        for offset in range(per_partition):
            job_id, value = submit(engine, user, job_type, args or {})
            batch[tp].append(Record(topic, p, offset, value, job_id.encode()))
            ids.append(job_id)
    return batch, ids


def counted(job_type):
    """Registers job type `counted`, which appends to the list returned at each run."""
    runs = []
    job_type("counted", lambda: runs.append(1) or {"ok": True})
    return runs


def status(engine, job_id):
    return js.get_job(engine, job_id)["status"]


def commits(worker):
    """Each commit request as {(topic, partition): next offset}."""
    return worker.consumer.commit_requests


@pytest.fixture
def recording(worker):
    requests = []
    real = worker.consumer.commit

    def commit(offsets):
        requests.append({(tp.topic, tp.partition): o.offset for tp, o in offsets.items()})
        real(offsets)

    worker.consumer.commit = commit
    worker.consumer.commit_requests = requests
    return worker


def test_a_batch_is_committed_once_after_every_outcome_and_message(recording, engine, user):
    worker = recording
    batch, ids = batch_of(engine, user, partitions=(0, 1), per_partition=3)
    worker.handle_batch(batch)
    assert all(status(engine, i) is JobStatus.SUCCEEDED for i in ids)
    assert commits(worker) == [{("jobs", 0): 3, ("jobs", 1): 3}]  # one request, both partitions
    assert sorted(k for _t, k, _v, _h in worker.queue.on("jobs.succeeded")) == sorted(ids)
    assert worker.handled == 6 and not worker.publisher.inflight


def test_kafka_failing_at_the_checkpoint_commits_nothing_and_runs_nothing_again(recording, engine, user, job_type):
    worker = recording
    runs = counted(job_type)
    batch, ids = batch_of(engine, user, "counted", per_partition=3)
    worker.queue.refuse_acks(1)  # the first job's event is not acknowledged
    worker.handle_batch(batch)
    tp = TopicPartition("jobs", 0)
    assert commits(worker) == []
    assert worker.consumer.seeks[tp] == 0  # rewound to the first record of the batch
    assert len(runs) == 3 and all(status(engine, i) is JobStatus.SUCCEEDED for i in ids)
    sent_before = len(worker.queue.on("jobs.succeeded"))
    assert sent_before == 2  # the two acknowledged ones
    # Kafka is back; the pause is over and the records come again: the messages are published
    # first, then the records committed; nothing is run again.
    worker.clock = lambda: NOW + defaults.INFRA_RETRY_SECONDS
    worker._resume_due()
    worker.handle_batch(batch)
    assert len(runs) == 3
    events = [k for _t, k, _v, _h in worker.queue.on("jobs.succeeded")]
    assert sorted(events) == sorted(ids)  # each event once
    assert commits(worker) == [{("jobs", 0): 3}]


def test_one_failing_job_is_that_jobs_failure_alone(recording, engine, user):
    worker = recording
    tp = TopicPartition("jobs", 0)
    batch, ids = {tp: []}, []
    for n, (job_type, args) in enumerate([("noop", {}), ("noop", {}), ("fail", {"message": "two"}), ("noop", {})]):
        job_id, value = submit(engine, user, job_type, args)
        batch[tp].append(Record("jobs", 0, n, value, job_id.encode()))
        ids.append(job_id)
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED, JobStatus.QUEUED,
                                                JobStatus.SUCCEEDED]
    assert [k for _t, k, _v, _h in worker.queue.on("jobs.retry")] == [ids[2]]
    assert commits(worker) == [{("jobs", 0): 4}]


def test_a_batch_stops_taking_records_after_its_time_and_the_rest_comes_next_poll(recording, engine, user,
                                                                                  monkeypatch):
    worker = recording
    monkeypatch.setattr(defaults, "BATCH_SECONDS", -1.0)  # already over: only what runs first
    batch, ids = batch_of(engine, user, partitions=(0, 1), per_partition=2)
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.QUEUED] * 4
    assert worker.consumer.seeks == {TopicPartition("jobs", 0): 0, TopicPartition("jobs", 1): 0}  # seek()s
    assert commits(worker) == []


def test_records_done_before_a_long_job_are_committed_before_it_runs(recording, engine, user, job_type,
                                                                     monkeypatch):
    worker = recording
    monkeypatch.setattr(defaults, "CHECKPOINT_SECONDS", -1.0)  # every record is "old" at once
    seen = []
    job_type("observer", lambda: seen.append(list(commits(worker))) or {})
    batch, ids = batch_of(engine, user, "observer", per_partition=3)
    worker.handle_batch(batch)
    # When the third job ran, the first two were committed already.
    assert seen[2] == [{("jobs", 0): 1}, {("jobs", 0): 2}]
    assert commits(worker)[-1] == {("jobs", 0): 3}


def test_a_stop_request_ends_the_batch_after_the_current_job(recording, engine, user, job_type):
    worker = recording
    job_type("stopper", lambda: worker.request_stop() or {})
    batch, ids = batch_of(engine, user, "stopper", per_partition=3)
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.QUEUED]
    assert commits(worker) == [{("jobs", 0): 1}]


def test_a_retry_not_yet_due_pauses_its_partition_and_the_batch_goes_on_elsewhere(recording, engine, user):
    worker = recording
    batch, ids = batch_of(engine, user, partitions=(0, 1), per_partition=2)
    tp0 = TopicPartition("jobs", 0)
    later = json.loads(batch[tp0][1].value)
    later["not_before"] = worker.clock() + 5
    batch[tp0][1] = batch[tp0][1]._replace(value=json.dumps(later).encode())
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.SUCCEEDED,
                                                JobStatus.SUCCEEDED]
    assert worker.consumer.seeks[tp0] == 1
    assert commits(worker) == [{("jobs", 0): 1, ("jobs", 1): 2}]


def test_the_run_loop_hands_whole_polls_to_the_batch(engine, user):
    from tests.unit.doubles import TOPICS, Consumer, Queue
    from worker.runner import Worker

    consumer = Consumer()
    worker = Worker(consumer=consumer, queue=Queue(), engine=engine, topics=TOPICS, batch_size=50)
    asked = []
    real_poll = consumer.poll
    consumer.poll = lambda timeout_ms=0, max_records=1: asked.append(max_records) or real_poll()
    batch, ids = batch_of(engine, user, per_partition=5)
    consumer.batches.append(batch)
    assert worker.run(max_messages=5) == 5
    assert asked == [5]  # no more than max_messages still wanted
    assert all(status(engine, i) is JobStatus.SUCCEEDED for i in ids)
    assert consumer.commits == [("jobs", 0, 5)]


def test_a_stuck_producer_costs_one_timeout_per_checkpoint_not_one_per_message(engine):
    # kafka-python's producer, stuck after a broker restart, never completes its futures: each
    # wait runs out its whole timeout. Seen in the drills as a worker stalled for minutes.
    import time as clock

    from app.jobqueue import QueueUnavailable
    from app.store.outbox import Message
    from worker.errors import KafkaUnavailable
    from worker.publisher import Publisher

    class StuckQueue:
        timeout = 0.2
        waited = []

        def send_async(self, topic, key, value, headers=None):
            return object()

        def wait(self, pending, timeout=None):
            self.waited.append(timeout)
            clock.sleep(max(0.0, timeout))
            raise QueueUnavailable("kafka: KafkaTimeoutError")

    publisher = Publisher(engine, StuckQueue())
    publisher.deferred = True
    publisher.unsent = [(i, Message("jobs.succeeded", "k%d" % i, b"{}")) for i in range(20)]
    publisher.flush()
    began = clock.monotonic()
    with pytest.raises(KafkaUnavailable):
        publisher.wait()
    assert clock.monotonic() - began < StuckQueue.timeout + 1 + 0.5  # one timeout (+1 s), not 20 of them
    assert len(StuckQueue.waited) == 20 and StuckQueue.waited[-1] <= 0.05  # each asked, the last at once
    assert [i for i, _m in publisher.unsent] == list(range(20))  # all kept, in order, for later


# -- set-based store work: claims together, successes together ----------------------------------
@pytest.fixture
def statements(engine):
    """The SQL statements the store runs (their first word), from now on."""
    from sqlalchemy import event

    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("per_partition", [2, 30])
def test_a_batch_costs_the_same_statements_however_many_jobs_it_holds(recording, engine, user, statements,
                                                                       per_partition):
    worker = recording
    batch, ids = batch_of(engine, user, partitions=(0, 1), per_partition=per_partition)
    statements.clear()
    worker.handle_batch(batch)
    assert all(status(engine, i) is JobStatus.SUCCEEDED for i in ids)
    assert all(js.get_job(engine, i)["attempts"] == 1 for i in ids)
    assert sorted(k for _t, k, _v, _h in worker.queue.on("jobs.succeeded")) == sorted(ids)
    # One claim for all and one INSERT of their `claimed` steps; one UPDATE of all successes, one
    # INSERT of their results, one of their `succeeded` steps, one of their outbox rows (whatever
    # the count of jobs); the previous batch's rows deleted in the next.
    assert statements.count("UPDATE") == 2 and statements.count("INSERT") == 4, " ".join(statements)
    assert commits(worker) == [{("jobs", 0): per_partition, ("jobs", 1): per_partition}]


def test_jobs_claimed_for_the_batch_but_not_run_are_released_and_count_no_attempt(recording, engine, user,
                                                                                   job_type):
    worker = recording
    stops = []
    job_type("stopper", lambda: stops or stops.append(worker.request_stop()) or {})  # the first run only
    batch, ids = batch_of(engine, user, "stopper", per_partition=4)
    worker.handle_batch(batch)
    jobs = [js.get_job(engine, i) for i in ids]
    assert [j["status"] for j in jobs] == [JobStatus.SUCCEEDED] + [JobStatus.QUEUED] * 3
    assert [(j["attempts"], j["claim_attempt"], j["crashes"]) for j in jobs[1:]] == [(0, 0, 0)] * 3
    # Fetched again (the stop was a test's): each runs once, as attempt 1, no crash counted.
    worker.stopping = False
    worker.handle_batch({TopicPartition("jobs", 0): batch[TopicPartition("jobs", 0)][1:]})
    jobs = [js.get_job(engine, i) for i in ids]
    assert all(j["status"] is JobStatus.SUCCEEDED and j["attempts"] == 1 and j["crashes"] == 0 for j in jobs)


def test_the_store_failing_at_the_checkpoint_stores_each_success_later_without_running_it_again(
        recording, engine, user, job_type, monkeypatch):
    from worker.errors import StoreUnavailable

    worker = recording
    runs = counted(job_type)
    batch, ids = batch_of(engine, user, "counted", per_partition=3)

    def down(outcomes):
        raise StoreUnavailable("store unavailable (OperationalError)")

    monkeypatch.setattr(worker.outcomes, "succeeded_many", down)
    worker.handle_batch(batch)
    tp = TopicPartition("jobs", 0)
    assert commits(worker) == [] and worker.consumer.seeks[tp] == 0 and worker.handled == 0
    assert len(runs) == 3 and all(status(engine, i) is JobStatus.RUNNING for i in ids)
    monkeypatch.undo()
    worker.clock = lambda: NOW + defaults.INFRA_RETRY_SECONDS
    worker._resume_due()
    worker.handle_batch(batch)
    assert len(runs) == 3  # not run again
    jobs = [js.get_job(engine, i) for i in ids]
    assert all(j["status"] is JobStatus.SUCCEEDED and j["attempts"] == 1 and j["crashes"] == 0 for j in jobs)
    assert sorted(k for _t, k, _v, _h in worker.queue.on("jobs.succeeded")) == sorted(ids)
    assert commits(worker) == [{("jobs", 0): 3}]


def test_a_result_the_store_refuses_fails_that_job_alone(recording, engine, user, monkeypatch):
    from sqlalchemy.exc import DataError

    worker = recording
    batch, ids = batch_of(engine, user, per_partition=3)
    real = js.store_successes

    def refusing(conn, outcomes, actor=None):  # the batch's transaction is refused; one job's own is too
        raise DataError("INSERT", {}, Exception("value too long"))

    def refusing_one(bind, job_id, result_json, actor=None):
        if job_id == ids[1]:
            raise DataError("INSERT", {}, Exception("value too long"))
        return real_one(bind, job_id, result_json, actor)

    real_one = js.store_success
    monkeypatch.setattr(js, "store_successes", refusing)
    monkeypatch.setattr(js, "store_success", refusing_one)
    worker.handle_batch(batch)
    worker.clock = lambda: NOW + defaults.INFRA_RETRY_SECONDS
    worker._resume_due()
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert "value too long" in js.get_job(engine, ids[1])["error"]
    assert [k for _t, k, _v, _h in worker.queue.on("jobs.dead")] == [ids[1]]
    assert commits(worker)[-1] == {("jobs", 0): 3}
    assert real is not None


def test_a_job_found_running_goes_one_record_at_a_time_and_only_it_counts_a_crash(recording, engine, user):
    worker = recording
    batch, ids = batch_of(engine, user, per_partition=3)
    # A worker died running the second job (its claim is there, its outcome is not).
    js.claim_job(engine, ids[1], worker.max_attempts, 1)
    worker.handle_batch(batch)
    jobs = [js.get_job(engine, i) for i in ids]
    assert all(j["status"] is JobStatus.SUCCEEDED for j in jobs)
    assert [(j["attempts"], j["crashes"]) for j in jobs] == [(1, 0), (2, 1), (1, 0)]
    assert commits(worker) == [{("jobs", 0): 3}]


def test_a_job_named_twice_in_a_batch_runs_once_and_counts_no_crash(recording, engine, user, job_type):
    worker = recording
    runs = counted(job_type)
    batch, ids = batch_of(engine, user, "counted", partitions=(0, 1), per_partition=2)
    tp0, tp1 = TopicPartition("jobs", 0), TopicPartition("jobs", 1)
    # The first job's record again, on the other partition (a producer's retry, say).
    batch[tp1].insert(0, batch[tp0][0]._replace(partition=1, offset=7))
    batch[tp1] = [r._replace(offset=7 + n) for n, r in enumerate(batch[tp1])]
    worker.handle_batch(batch)
    jobs = [js.get_job(engine, i) for i in ids]
    assert len(runs) == 4
    assert all(j["status"] is JobStatus.SUCCEEDED and j["attempts"] == 1 and j["crashes"] == 0 for j in jobs)
    # The batch's success stored (a checkpoint) before the second record's own claim.
    assert commits(worker) == [{("jobs", 0): 2}, {("jobs", 1): 10}]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (checkpoint and release are switched off)."""


def test_batch_mates_of_a_job_that_kills_every_worker_are_charged_once_and_succeed(engine, user, job_type):
    from tests.unit.doubles import TOPICS, Consumer, Queue
    from worker.runner import Worker

    def kill():
        raise Killed()

    job_type("killer", kill)
    tp = TopicPartition("jobs", 0)
    batch, ids = {tp: []}, []
    for n, job_type_name in enumerate(["noop", "noop", "killer", "noop", "noop"]):
        job_id, value = submit(engine, user, job_type_name, {})
        batch[tp].append(Record("jobs", 0, n, value, job_id.encode()))
        ids.append(job_id)
    deaths = 0
    for _worker in range(6):  # supervisor starting a new worker after each death
        worker = Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3,
                        clock=lambda: NOW)
        worker.checkpoint = lambda: None
        worker._release_ahead = lambda job_id=None: True  # nothing released, nothing kept
        try:
            worker.handle_batch(batch)
        except Killed:
            deaths += 1
            continue
        break
    jobs = [js.get_job(engine, i) for i in ids]
    assert deaths == 3
    assert jobs[2]["status"] is JobStatus.FAILED and "crashed the worker 3 times" in jobs[2]["error"]
    innocent = jobs[:2] + jobs[3:]
    assert all(j["status"] is JobStatus.SUCCEEDED for j in innocent)
    # Claimed with the first batch, run or not, they cost one attempt (and crash) each at most.
    assert all(j["attempts"] <= 2 and j["crashes"] <= 1 for j in innocent), [(j["attempts"], j["crashes"]) for j in innocent]


# -- after review: claims ahead never turn into crashes nobody had ---------------------------------
def at_attempt(engine, user, job_type_name, attempt, worker):
    """A job queued for ``attempt`` (its earlier attempts failed), and its record's value."""
    from app.messages import encode_job

    job_id, _value = submit(engine, user, job_type_name, {})
    for n in range(1, attempt):
        js.claim_job(engine, job_id, worker.max_attempts, n)
        js.requeue_job(engine, job_id, n, "failed before")
    return job_id, encode_job(job_id, job_type_name, {}, attempt=attempt)


def fresh_worker(engine):
    from tests.unit.doubles import TOPICS, Consumer, Queue
    from worker.runner import Worker

    return Worker(consumer=Consumer(), queue=Queue(), engine=engine, topics=TOPICS, max_attempts=3, clock=lambda: NOW)


def test_a_last_attempt_is_never_claimed_ahead_so_a_batch_mates_crash_cannot_fail_it(engine, user, job_type):
    def kill():
        raise Killed()

    job_type("killer", kill)
    worker = fresh_worker(engine)
    tp = TopicPartition("jobs.retry", 0)
    batch, ids = {tp: []}, []
    for n, name in enumerate(["noop", "killer", "noop"]):
        job_id, value = at_attempt(engine, user, name, 3, worker)
        batch[tp].append(Record("jobs.retry", 0, n, value, job_id.encode()))
        ids.append(job_id)
    worker.checkpoint = lambda: True  # killed: nothing after the kill runs
    with pytest.raises(Killed):
        worker.handle_batch(batch)
    worker = fresh_worker(engine)
    worker.handle_batch(batch)
    jobs = [js.get_job(engine, i) for i in ids]
    assert jobs[1]["status"] is JobStatus.FAILED  # the killer, found running at its last attempt
    # The first ran and was concluded at once (no claim ahead); the third was never claimed.
    assert [(j["status"], j["crashes"]) for j in (jobs[0], jobs[2])] == [(JobStatus.SUCCEEDED, 0)] * 2


def test_a_release_that_fails_keeps_the_claims_and_their_records_run_them_without_a_crash(
        recording, engine, user, job_type, monkeypatch):
    from sqlalchemy.exc import OperationalError

    worker = recording
    stops = []
    job_type("stopper", lambda: stops or stops.append(worker.request_stop()) or {})
    batch, ids = batch_of(engine, user, "stopper", per_partition=3)

    def down(conn, claims):
        raise OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(js, "release_jobs", down)
    worker.handle_batch(batch)
    assert [status(engine, i) for i in ids] == [JobStatus.SUCCEEDED, JobStatus.RUNNING, JobStatus.RUNNING]
    monkeypatch.undo()
    worker.stopping = False
    worker.handle_batch({TopicPartition("jobs", 0): batch[TopicPartition("jobs", 0)][1:]})
    jobs = [js.get_job(engine, i) for i in ids]
    assert all(j["status"] is JobStatus.SUCCEEDED and j["attempts"] == 1 and j["crashes"] == 0 for j in jobs)
    assert not worker.ahead


def test_a_job_named_again_while_its_success_cannot_be_stored_waits_and_runs_once(
        recording, engine, user, job_type, monkeypatch):
    from worker.errors import StoreUnavailable

    worker = recording
    runs = counted(job_type)
    batch, ids = batch_of(engine, user, "counted", partitions=(0, 1), per_partition=2)
    tp0, tp1 = TopicPartition("jobs", 0), TopicPartition("jobs", 1)
    batch[tp1] = [batch[tp0][0]._replace(partition=1, offset=7)] + [r._replace(offset=8 + n) for n, r in
                                                                       enumerate(batch[tp1])]

    def down(outcomes):
        raise StoreUnavailable("store unavailable (OperationalError)")

    monkeypatch.setattr(worker.outcomes, "succeeded_many", down)
    worker.handle_batch(batch)
    assert worker.consumer.seeks[tp1] == 7  # the copy waits for its job's first record
    monkeypatch.undo()
    worker.clock = lambda: NOW + defaults.INFRA_RETRY_SECONDS
    worker._resume_due()
    worker.handle_batch(batch)
    jobs = [js.get_job(engine, i) for i in ids]
    assert len(runs) == 4
    assert all(j["status"] is JobStatus.SUCCEEDED and j["attempts"] == 1 and j["crashes"] == 0 for j in jobs)


def test_a_poison_record_naming_a_job_keeps_that_job_from_the_batch_claim(recording, engine, user, job_type):
    worker = recording
    runs = counted(job_type)
    batch, ids = batch_of(engine, user, "counted", partitions=(0, 1), per_partition=2)
    tp0 = TopicPartition("jobs", 0)
    victim = ids[2]  # the first job of partition 1, named first by a poison record on partition 0
    batch[tp0].insert(0, Record("jobs", 0, 9, b"{not json", victim.encode()))
    batch[tp0] = [r._replace(offset=9 + n) for n, r in enumerate(batch[tp0])]
    worker.handle_batch(batch)
    assert status(engine, victim) is JobStatus.FAILED and len(runs) == 3  # failed by the poison, never run
    assert all(status(engine, i) is JobStatus.SUCCEEDED for i in ids if i != victim)


def test_outcomes_the_store_refused_at_the_checkpoint_get_one_more_try_on_the_way_out(
        recording, engine, user, monkeypatch):
    from worker.errors import StoreUnavailable

    worker = recording
    batch, ids = batch_of(engine, user, per_partition=3)

    def down(outcomes):
        raise StoreUnavailable("store unavailable (OperationalError)")

    monkeypatch.setattr(worker.outcomes, "succeeded_many", down)
    worker.handle_batch(batch)
    assert all(status(engine, i) is JobStatus.RUNNING for i in ids) and len(worker.decided) == 3
    monkeypatch.undo()
    worker._settle_before_leaving()  # the store is back; the worker stops before the records return
    assert all(status(engine, i) is JobStatus.SUCCEEDED for i in ids) and not worker.decided
    assert commits(worker) == []  # the next owner gets them again, and skips the finished jobs
