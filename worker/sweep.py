"""Nothing stays `queued` for ever: jobs whose message is nowhere are found and settled.

A job row is committed before its message is produced (the API) and a retry's row change
before its message is published (the outbox). Between the two a process can die, or the API
can fail to mark a refused submit as failed: the row is `queued` with no message to move it. A
queued job is stranded when it has not changed for STRANDED_AFTER and the consumer group has
consumed everything on its partitions of `jobs` and `jobs.retry` (so no message of it waits
there) and the outbox holds nothing for it. Then: never enqueued (attempts 0) -> failed, as
the client was told (503); a retry that was lost -> its retry message is sent again."""
from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any, Dict, List, Optional

from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition
from sqlalchemy import select

from app.messages import encode_job
from app.states import JobStatus
from app.store import jobs as job_store
from app.store import outbox
from app.store.outbox import Message
from app.store.schema import jobs
from app.store.users import utcnow


log = logging.getLogger("worker")

#: Candidates looked at per sweep.
BATCH = 50


def partition_of(job_id: str, partitions: int) -> int:
    """Where a message keyed by ``job_id`` goes (kafka-python's default partitioner)."""
    return (murmur2(job_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def candidates(conn: Any, older_than: float) -> List[Dict[str, Any]]:
    """Queued jobs unchanged for ``older_than`` seconds with nothing in the outbox."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    rows = [dict(r._mapping) for r in conn.execute(
        select(jobs.c.id, jobs.c.type, jobs.c.args, jobs.c.attempts)
        .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.updated_at < cutoff)
        .order_by(jobs.c.seq).limit(BATCH))]
    pending = outbox.pending_jobs(conn, [r["id"] for r in rows])
    return [r for r in rows if r["id"] not in pending]


def unconsumed(consumer: Any, topic: str) -> Optional[Dict[int, int]]:
    """Per partition of ``topic``: records the group has not committed yet (None if unknown)."""
    parts = sorted(consumer.partitions_for_topic(topic) or [])
    if not parts:
        return None
    tps = [TopicPartition(topic, p) for p in parts]
    end = consumer.end_offsets(tps)
    begin = consumer.beginning_offsets(tps)
    return {tp.partition: end[tp] - max(begin[tp], consumer.committed(tp) or 0) for tp in tps}


def sweep(worker: Any, older_than: float) -> int:
    """Settle the stranded jobs found now; how many. Raises Unavailable when the store is down."""
    found = worker.publisher.transaction(lambda conn: candidates(conn, older_than))
    if not found:
        return 0
    lags = [unconsumed(worker.consumer, t) for t in (worker.topics.jobs, worker.topics.retry)]
    if any(lag is None for lag in lags):
        return 0
    settled = 0
    for job in found:
        if any(lag[partition_of(job["id"], len(lag))] for lag in lags if lag):
            continue  # something is still waiting there: it may be this job's message
        settled += settle(worker, job, older_than)
    return settled


def settle(worker: Any, job: Dict[str, Any], older_than: float) -> int:
    job_id, attempts = job["id"], job["attempts"]
    if attempts == 0:
        # As the API does when Kafka refuses a submit (mark_enqueue_failed): failed, no event.
        error = "not enqueued: no message reached the workers in %.0f s" % older_than
        done = worker.publisher.conclude(lambda conn: job_store.reject_job(conn, job_id, error), [])
        what = "failed (never enqueued)"
    else:
        retry = Message(worker.topics.retry, job_id, encode_job(job_id, job["type"], json.loads(job["args"]),
                                                                attempt=attempts + 1, not_before=None), job_id=job_id)
        # The touch is conditional: only one sweeping worker re-sends a given retry.
        done = worker.publisher.conclude(lambda conn: job_store.touch_queued(conn, job_id, attempts), [retry])
        what = "retry %d sent again" % (attempts + 1)
    if done:
        log.warning("job %s: stranded in queued for over %.0f s; %s", job_id, older_than, what)
    return int(done)


class Every:
    """A timer for the worker's loop: ``due()`` is true once every ``seconds``."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.every = seconds
        self.clock = clock
        self.next_at = clock() + seconds

    def due(self) -> bool:
        if self.clock() < self.next_at:
            return False
        self.next_at = self.clock() + self.every
        return True
