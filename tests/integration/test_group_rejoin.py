"""The worker's consumer group membership on the real broker: a rebalance always finishes."""
from __future__ import annotations

import time

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
