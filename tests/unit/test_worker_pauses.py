"""A paused partition always has a time to resume, across rebalances (worker/consumer.py)."""
from kafka.structs import TopicPartition

from tests.unit.doubles import NOW
from worker.consumer import ForgetRevoked

JOBS0, JOBS1, RETRY0 = TopicPartition("jobs", 0), TopicPartition("jobs", 1), TopicPartition("jobs.retry", 0)


def test_an_eager_rebalance_that_gives_a_partition_back_keeps_its_pause(worker):
    worker._pause(RETRY0, 7, NOW + 5)  # a retry not due for 5 s
    worker._pause(JOBS1, 3, NOW + 5)
    listener = ForgetRevoked(worker)
    listener.on_partitions_revoked({JOBS0, JOBS1, RETRY0})  # eager: all of them, every time
    listener.on_partitions_assigned({JOBS0, RETRY0})  # jobs[1] went to another member
    assert worker.paused_until == {RETRY0: NOW + 5}


def test_a_partition_paused_with_no_time_to_resume_is_resumed(worker):
    worker._pause(RETRY0, 7, NOW + 5)
    worker.consumer.pause(JOBS0)  # paused by something that set no time (as the old listener left it)
    worker._resume_due()
    assert worker.consumer.paused() == {RETRY0}  # the retry still waits for its time
    assert worker.consumer.seeks == {RETRY0: 7}
