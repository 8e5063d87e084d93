"""A paused partition always has a time to resume, across rebalances (worker/consumer.py)."""
from kafka.structs import TopicPartition

from tests.unit.doubles import NOW
from worker.consumer import ForgetRevoked
from worker.runner import Decision

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


def test_a_partition_handed_back_with_fresh_state_loses_its_timer(worker):
    # kafka-python gives a partition back unpaused when its state was dropped (the member was
    # thrown out of the group): a timer left for it would make the loop drop its records.
    worker._pause(RETRY0, 7, NOW + 5)
    listener = ForgetRevoked(worker)
    listener.on_partitions_revoked({RETRY0})
    worker.consumer.resume(RETRY0)  # what kafka-python's fresh state looks like
    listener.on_partitions_assigned({RETRY0})
    assert worker.paused_until == {}


def test_a_member_dropped_from_the_group_forgets_its_partitions(worker):
    worker._pause(RETRY0, 7, NOW + 5)
    worker.decided[("jobs.retry", 0, 7)] = worker.decided[("jobs", 1, 3)] = Decision("j", lambda: None)
    ForgetRevoked(worker).on_partitions_lost({RETRY0})
    assert worker.paused_until == {} and list(worker.decided) == [("jobs", 1, 3)]


def test_decisions_stay_with_a_partition_handed_back_and_go_with_one_that_moved(worker):
    # A record whose outcome could not be stored comes back after the rebalance: with its
    # decision, it is settled, not claimed again (which would count a crash and run it twice).
    worker.decided[("jobs", 0, 4)] = worker.decided[("jobs", 1, 9)] = Decision("j", lambda: None)
    listener = ForgetRevoked(worker)
    listener.on_partitions_revoked({JOBS0, JOBS1})
    listener.on_partitions_assigned({JOBS0})
    assert list(worker.decided) == [("jobs", 0, 4)]


def test_a_time_to_resume_without_a_pause_is_forgotten(worker):
    worker._pause(RETRY0, 7, NOW + 5)
    worker.consumer.resume(RETRY0)  # unpaused behind the worker's back
    worker._resume_due()
    assert worker.paused_until == {}
