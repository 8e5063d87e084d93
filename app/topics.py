"""Kafka topic names and their creation.

"Kafka maintains queues of active, successful and failed jobs": `jobs` holds active work,
`jobs.succeeded` and `jobs.failed` carry status events, `jobs.retry` holds attempts waiting
for their backoff, `jobs.dead` keeps messages that will never succeed (attempts used up,
undecodable payloads) for a person to look at.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Tuple

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    jobs: str
    retry: str
    succeeded: str
    failed: str
    dead: str

    @classmethod
    def with_prefix(cls, prefix: str = "") -> "Topics":
        return cls(
            jobs=prefix + "jobs",
            retry=prefix + "jobs.retry",
            succeeded=prefix + "jobs.succeeded",
            failed=prefix + "jobs.failed",
            dead=prefix + "jobs.dead",
        )

    def all(self) -> Tuple[str, ...]:
        return (self.jobs, self.retry, self.succeeded, self.failed, self.dead)


def ensure_topics(bootstrap: str, topics: Topics, partitions: int, timeout: float = 30.0,
                  replication: int = 1) -> None:
    """Create any missing topic (the broker does not auto-create them) with ``replication``
    replicas, then wait until all exist. An existing topic is left as it is."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="joblab-admin",
        bootstrap_timeout_ms=int(timeout * 1000),
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics.all() if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(name=t, num_partitions=partitions, replication_factor=replication)
                     for t in missing],
                    timeout_ms=int(timeout * 1000),
                )
                log.info("created topics %s (%d partitions, %d replicas)", ", ".join(missing), partitions, replication)
            except TopicAlreadyExistsError:
                pass  # another process won the race; fine
        admin.wait_for_topics(list(topics.all()), timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
