"""Publishing through the store's outbox (app/store/outbox.py).

``conclude(change, messages)`` writes a job's state change and the messages it implies in ONE
transaction, then publishes them, waiting for Kafka's acknowledgements. The rows of published
messages are deleted in batches within the worker's next transactions (no extra round trip per
job), or when it idles. What could not be published stays in ``unsent``, leased to this worker: the worker
publishes it before anything else (and commits no offset until it has); if the worker dies, any
worker takes the rows over once the lease runs out (``relay``)."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, List, Sequence, Tuple, TypeVar

from kafka.errors import KafkaError
from sqlalchemy.engine import Connection, Engine

from app.jobqueue import JobQueue, QueueUnavailable
from app.store import outbox
from app.store.outbox import Message

from . import defaults
from .errors import KafkaUnavailable, in_store

log = logging.getLogger("worker")

T = TypeVar("T")


class Publisher:
    def __init__(self, engine: Engine, queue: JobQueue, lease_seconds: float = defaults.OUTBOX_LEASE_SECONDS) -> None:
        self.engine = engine
        self.queue = queue
        self.lease = lease_seconds
        self.owner = "worker-%s" % uuid.uuid4().hex[:16]
        self.unsent: List[Tuple[int, Message]] = []
        self.sent: List[int] = []
        self.sent_since = 0.0
        self._renew_first = False

    def _deletion_due(self) -> bool:
        # Batched: one DELETE per DELETE_BATCH published rows, and none older than DELETE_AFTER
        # seconds (far inside the lease, so the relay never sees a published row as abandoned).
        return bool(self.sent) and (len(self.sent) >= defaults.OUTBOX_DELETE_BATCH
                                    or time.monotonic() - self.sent_since >= defaults.OUTBOX_DELETE_AFTER_SECONDS)

    def transaction(self, work: Callable[[Connection], T], tidy: bool = False) -> T:
        """``work(conn)`` in a store transaction that also deletes published rows, when due (or
        with ``tidy``)."""
        deleting = list(self.sent) if (tidy or self._deletion_due()) else []

        def run() -> T:
            with self.engine.begin() as conn:
                outbox.remove(conn, deleting)
                return work(conn)

        result = in_store(run)
        if deleting:
            self.sent = self.sent[len(deleting):]
        return result

    def conclude(self, change: Callable[[Connection], bool], messages: Sequence[Message], always: bool = False) -> bool:
        """Apply ``change`` and, if it applied (or ``always``), add ``messages`` to the outbox, in one
        transaction; then publish them. Returns whether the change applied. Raises
        StoreUnavailable when nothing could be written, KafkaUnavailable when it was written but
        not (all) published: the rest waits in ``unsent`` and in the outbox."""
        def work(conn: Connection) -> Tuple[bool, List[int]]:
            applied = change(conn)
            ids = outbox.add(conn, self.owner, messages, self.lease) if (applied or always) and messages else []
            return applied, ids

        applied, ids = self.transaction(work)
        self.unsent.extend(zip(ids, messages))
        self.flush()
        return applied

    def flush(self) -> None:
        """Publish what is unsent, in order, each acknowledged; Unavailable at the first failure."""
        if not self.unsent:
            return
        if self._renew_first:
            # Kafka failed before: the lease may have run out meanwhile, and another worker taken
            # a row over. Publish only what is still ours.
            mine = in_store(outbox.renew, self.engine, self.owner, [i for i, _m in self.unsent], self.lease)
            lost = [i for i, _m in self.unsent if i not in mine]
            if lost:
                log.warning("outbox rows %s were taken over by another worker", lost)
            self.unsent = [(i, m) for i, m in self.unsent if i in mine]
        while self.unsent:
            row_id, m = self.unsent[0]
            try:
                self.queue.send(m.topic, m.key, m.value, m.headers or None)
            except (QueueUnavailable, KafkaError) as exc:
                self._renew_first = True
                raise KafkaUnavailable("kafka unavailable (%s)" % exc) from exc
            self.unsent.pop(0)
            if not self.sent:
                self.sent_since = time.monotonic()
            self.sent.append(row_id)
        self._renew_first = False

    def tidy(self) -> None:
        """Delete the rows of published messages now (the worker is idle)."""
        if self.sent:
            self.transaction(lambda conn: None, tidy=True)

    def relay(self, limit: int = 100) -> int:
        """Take over and publish messages whose writer's lease ran out; how many were taken."""
        taken = in_store(outbox.take_abandoned, self.engine, self.owner, self.lease, limit)
        if taken:
            log.warning("publishing %d outbox messages left by another worker", len(taken))
            self.unsent.extend(taken)
            self.flush()
        return len(taken)


def dead_letter(topic: str, record: Any, key: str, reason: str, attempts: int = 0,
                job_id: Any = None) -> Message:
    """The original bytes, untouched, with headers saying where they came from and why."""
    headers = [
        ("error", reason.encode("utf-8", "replace")[:4096]),
        ("source", ("%s[%d]@%d" % (record.topic, record.partition, record.offset)).encode()),
        ("attempts", str(attempts).encode()),
    ]
    return Message(topic, key, record.value, headers, job_id)
