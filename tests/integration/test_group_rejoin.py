"""The worker's consumer group membership on the real broker: a rebalance always finishes."""
from __future__ import annotations

import time

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewPartitions

from worker.main import build_worker


def test_a_rejoin_that_outlives_its_poll_is_finished(make_stack, sqlite_url):
    # Regression (found by `make drills`): kafka-python 3.0.x drives a rejoin that a metadata change
    # started only while the change is unseen; a JoinGroup answered after its poll returned left
    # the worker "rebalancing" with no partitions for good. Added partitions are such a change,
    # and 1 ms polls make every round trip outlive its poll.
    stack = make_stack(sqlite_url, KAFKA_PARTITIONS=2)
    worker = build_worker(stack.settings)
    try:
        deadline = time.monotonic() + 30
        while len(worker.consumer.assignment()) < 4 and time.monotonic() < deadline:
            worker.poll(200, 10)
        assert len(worker.consumer.assignment()) == 4  # jobs + jobs.retry, 2 partitions each

        admin = KafkaAdminClient(bootstrap_servers=stack.settings["KAFKA_BOOTSTRAP"])
        try:
            admin.create_partitions({stack.topics.jobs: NewPartitions(total_count=4)})
        finally:
            admin.close()
        deadline = time.monotonic() + 30
        while len(worker.consumer.partitions_for_topic(stack.topics.jobs)) < 4 and time.monotonic() < deadline:
            worker.consumer.topics()  # a metadata refresh now, not after metadata.max.age
            time.sleep(0.2)

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            worker.poll(1, 10)
            if len(worker.consumer.assignment()) == 6 and not worker.consumer._coordinator.rebalance_in_progress():
                break
        assert len(worker.consumer.assignment()) == 6, worker.consumer.assignment()
        assert not worker.consumer._coordinator.rebalance_in_progress()
    finally:
        worker.consumer.close(autocommit=False)
        worker.queue.close()
        worker.engine.dispose()


def test_a_retry_paused_across_a_rebalance_that_keeps_its_partition_still_runs(make_stack, sqlite_url):
    # Regression (found by the cluster drills: 6 `fail` jobs `queued` for good): kafka-python's
    # default assignors rebalance eagerly, revoking every partition and handing the same ones back
    # with their paused flag kept. The worker forgot its pauses on revocation, so a partition
    # paused for a retry not yet due stayed paused for ever. A member that joins for another topic
    # rebalances the group without moving any of the worker's partitions.
    stack = make_stack(sqlite_url, MAX_ATTEMPTS=2, RETRY_BACKOFF=8.0, RETRY_BACKOFF_MAX=8.0)
    job_id = stack.submit("fail", {"message": "boom"})
    wt = stack.start_worker()
    deadline = time.monotonic() + 30
    while not any(tp.topic == stack.topics.retry for tp in list(wt.worker.paused_until)):
        assert time.monotonic() < deadline, "the retry never waited: %s" % stack.job(job_id)
        wt.check_alive()
        time.sleep(0.05)
    waiting_since = time.monotonic()

    other = KafkaConsumer(stack.topics.dead, bootstrap_servers=stack.settings["KAFKA_BOOTSTRAP"],
                          group_id=stack.settings["KAFKA_GROUP"], enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 20
        while not other.assignment():
            assert time.monotonic() < deadline, "the rebalance did not finish"
            other.poll(timeout_ms=200)
        assert not any(tp.topic != stack.topics.dead for tp in other.assignment())
        rebalanced_after = time.monotonic() - waiting_since
    finally:
        other.close()  # a second rebalance, the same way
    assert rebalanced_after < 7.0, "the rebalance came after the retry was due: nothing was tested"
    job = stack.wait_status(job_id, "failed", timeout=40)  # 8 s of backoff, then the second attempt
    assert job["attempts"] == 2
