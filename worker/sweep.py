"""Nothing stays `queued` for ever: jobs whose message is nowhere are found and settled.

A job row is committed before its message is produced (the API) and a retry's row change
before its message is published (the outbox). Between the two a process can die, or the API
can fail to mark a refused submit as failed: the row is `queued` with no message to move it.

A queued job unchanged for STRANDED_AFTER with nothing in the outbox is a candidate. Its message,
if it has one, was produced before it became one (a produce takes seconds). So the sweep notes,
the first time it sees a candidate, where its partitions of `jobs` and `jobs.retry` end; once the
group has committed past those ends (at a later sweep, backlog or not) and the job is still the
same queued candidate, no message of it is left anywhere: it is stranded, and its message is
sent again (the first attempt's to `jobs`, a lost retry's to `jobs.retry`), with the row's change
in one outbox transaction. Re-delivery is harmless (the claim of a queued job needs its exact next
attempt), so a message that did exist after all runs the job once. The change is conditional
(still queued, same attempts, still old): of two workers sweeping at once, one re-sends a job."""
from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any, Dict, List, Tuple

from kafka.structs import TopicPartition
from sqlalchemy import select

from app.messages import encode_job
from app.published import partition_of
from app.states import JobStatus
from app.store import jobs as job_store
from app.store import outbox
from app.store.outbox import Message
from app.store.schema import jobs
from app.store.users import utcnow

log = logging.getLogger("worker")

#: Candidates looked at per sweep (the oldest first).
BATCH = 50
#: Bound of each broker request the sweep makes (it runs in the worker's loop).
BROKER_TIMEOUT_MS = 5000

Marks = Dict[TopicPartition, int]


def candidates(conn: Any, older_than: float) -> List[Dict[str, Any]]:
    """Queued jobs unchanged for ``older_than`` seconds with nothing in the outbox."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    rows = [dict(r._mapping) for r in conn.execute(
        select(jobs.c.id, jobs.c.type, jobs.c.args, jobs.c.attempts)
        .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.updated_at < cutoff)
        .order_by(jobs.c.updated_at).limit(BATCH))]
    pending = outbox.pending_jobs(conn, [r["id"] for r in rows])
    return [r for r in rows if r["id"] not in pending]


def job_partitions(consumer: Any, topics: Tuple[str, ...], job_id: str) -> List[TopicPartition]:
    out = []
    for topic in topics:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        if not parts:
            raise LookupError("no partitions known for %s" % topic)
        out.append(TopicPartition(topic, parts[partition_of(job_id, len(parts))]))
    return out


def sweep(worker: Any, older_than: float) -> int:
    """Settle the stranded jobs found now; how many. Raises Unavailable when the store is down."""
    found = worker.publisher.transaction(lambda conn: candidates(conn, older_than))
    marks: Dict[Tuple[str, int], Marks] = worker.sweep_marks
    seen = {(j["id"], j["attempts"]) for j in found}
    for gone in [k for k in marks if k not in seen]:
        del marks[gone]  # settled, or moved on by itself
    consumer, topics = worker.consumer, (worker.topics.jobs, worker.topics.retry)
    settled = 0
    for job in found:
        key = (job["id"], job["attempts"])
        try:
            tps = job_partitions(consumer, topics, job["id"])
            if key not in marks:
                marks[key] = consumer.end_offsets(tps, timeout_ms=BROKER_TIMEOUT_MS)
                continue  # decided at a later sweep, once the group is past these ends
            if any((consumer.committed(tp, timeout_ms=BROKER_TIMEOUT_MS) or 0) < end
                   for tp, end in marks[key].items()):
                continue  # its message may still be waiting there
            settled += settle(worker, job, older_than)
            del marks[key]
        except Exception as exc:  # one odd row or a slow broker: the next job, the next sweep
            log.warning("sweep: job %s: %s: %s", job["id"], exc.__class__.__name__, exc)
    return settled


def settle(worker: Any, job: Dict[str, Any], older_than: float) -> int:
    job_id, attempts = job["id"], job["attempts"]
    cutoff = utcnow() - timedelta(seconds=older_than)
    # Never enqueued (its API process died between the INSERT and the produce, or Kafka refused it
    # and marking it failed failed too): its first message; else the lost retry.
    topic = worker.topics.jobs if attempts == 0 else worker.topics.retry
    message = Message(topic, job_id, encode_job(job_id, job["type"], json.loads(job["args"]),
                                                attempt=attempts + 1, not_before=None), job_id=job_id)
    done = worker.publisher.conclude(lambda conn: job_store.settle_stranded(conn, job_id, attempts, cutoff),
                                     [message])
    what = "attempt %d sent again to %s" % (attempts + 1, topic)
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
