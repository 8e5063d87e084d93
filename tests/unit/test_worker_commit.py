"""Offset commits that fail: never a crash, since the job's outcome is already stored."""
import logging

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError
from kafka.structs import TopicPartition

from app.topics import Topics
from worker.runner import Worker


class RefusingConsumer:
    def __init__(self, exc):
        self.exc = exc
        self.calls = []

    def commit(self, offsets):
        self.calls.append(offsets)
        raise self.exc


@pytest.mark.parametrize("exc", [CommitFailedError("rebalanced"), KafkaConnectionError("111 ECONNREFUSED")])
def test_failed_commit_is_logged_not_raised(exc, caplog):
    consumer = RefusingConsumer(exc)
    worker = Worker(consumer=consumer, queue=None, engine=None, topics=Topics.with_prefix(""))
    tp = TopicPartition("jobs", 2)
    with caplog.at_level(logging.WARNING, logger="worker"):
        worker._commit({tp: 41})
    assert [o[tp].offset for o in consumer.calls] == [42]
    assert "jobs[2]@41 failed (%s)" % exc.__class__.__name__ in caplog.text
