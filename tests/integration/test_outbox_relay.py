"""The outbox on the real broker: a message that may have gone out already is looked up before it
is sent again (a worker killed between Kafka's ack and its delete, or a lost ack)."""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select

from app.jobqueue import JobQueue, QueueUnavailable
from app.published import MESSAGE_ID, partition_of
from app.store import outbox
from app.store.outbox import Message
from app.store.schema import outbox as outbox_table
from worker.publisher import Publisher


def test_messages_kafka_holds_are_found_in_their_partitions(make_stack, sqlite_url):
    stack = make_stack(sqlite_url, KAFKA_PARTITIONS=3)
    queue = JobQueue(stack.settings["KAFKA_BOOTSTRAP"], timeout=10.0)
    try:
        topic, now = stack.topics.dead, time.time()
        sent = ["%s" % uuid.uuid4().hex for _ in range(6)]
        for n, mid in enumerate(sent):
            queue.send(topic, "job-%d" % n, b"v", [("error", b"x"), (MESSAGE_ID, mid.encode())])
        queue.send(topic, "job-0", b"no id")  # a message of another writer: no id, ignored
        never = [uuid.uuid4().hex for _ in range(3)]
        wanted = [(topic, "job-%d" % n, mid, now) for n, mid in enumerate(sent + never)]
        assert queue.find_published(wanted) == set(sent)
        # An id is looked for in its key's partition only: under a key of the same partition as
        # job-0's it is found, under a key of another partition it is not.
        keys = ["other-%d" % n for n in range(30)]
        same = [k for k in keys if partition_of(k, 3) == partition_of("job-0", 3)]
        other = [k for k in keys if partition_of(k, 3) != partition_of("job-0", 3)]
        assert same and other
        assert queue.find_published([(topic, same[0], sent[0], now)]) == {sent[0]}
        assert queue.find_published([(topic, other[0], sent[0], now)]) == set()
        assert queue.find_published([]) == set()
    finally:
        queue.close()


def test_the_heir_of_a_killed_worker_sends_only_what_never_went_out(make_stack, sqlite_url):
    stack = make_stack(sqlite_url)
    queue = JobQueue(stack.settings["KAFKA_BOOTSTRAP"], timeout=10.0)
    try:
        topic = stack.topics.dead
        with stack.engine.begin() as conn:  # the killed worker's rows, their lease run out
            rows = outbox.add(conn, "killed", [Message(topic, "job-a", b"a"), Message(topic, "job-b", b"b")], -1)
        _id, first = rows[0]
        queue.send(first.topic, first.key, first.value, first.headers)  # acknowledged; the kill came next
        heir = Publisher(stack.engine, queue)
        assert heir.relay() == 2
        heir.tidy()
        values = sorted(r.value for r in stack.read_topic(topic))
        assert values == [b"a", b"b"]
        with stack.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(outbox_table)).scalar() == 0
    finally:
        queue.close()


def test_a_lookup_kafka_cannot_answer_says_so_in_time():
    queue = JobQueue("127.0.0.1:9", timeout=1.0)  # nothing listens there
    began = time.monotonic()
    with pytest.raises(QueueUnavailable):
        queue.find_published([("t", "k", "id", time.time())])
    assert time.monotonic() - began < 10
