"""Publishing through the store's outbox (app/store/outbox.py).

``conclude(change, messages)`` writes a job's state change and the messages it implies in ONE
transaction, then publishes them, waiting for Kafka's acknowledgements. The rows of published
messages are deleted right after Kafka's acknowledgements (or, if the store is down then, in the
worker's next transaction). What could not be published stays in ``unsent``, leased to this worker: the worker
publishes it before anything else (and commits no offset until it has); if the worker dies, any
worker takes the rows over once the lease runs out (``relay``). A row whose message may be on
Kafka already (taken over, or its ack lost) is looked up there before it is sent again."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar

from kafka.errors import InvalidTopicError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from sqlalchemy.engine import Connection, Engine

from app.config import DEFAULTS
from app.jobqueue import JobQueue, QueueUnavailable
from app.store import outbox
from app.published import message_id
from app.store.outbox import Message

from . import defaults, owner
from .errors import KafkaUnavailable, Unavailable, in_store

log = logging.getLogger("worker")

T = TypeVar("T")

#: Errors no retry can cure: the message itself is what Kafka refuses.
PERMANENT = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError)


class Publisher:
    def __init__(self, engine: Engine, queue: JobQueue,
                 lease_seconds: float = defaults.outbox_lease_seconds(DEFAULTS["JOB_MAX_SECONDS"])) -> None:
        self.engine = engine
        self.queue = queue
        self.lease = lease_seconds
        self.owner = owner.new_owner()  # host~place:pid:nonce (worker/owner.py)
        self.unsent: List[Tuple[int, Message]] = []
        self.sent: List[int] = []
        # Rows whose message may be on Kafka already: taken over from a worker that died (maybe
        # after Kafka's ack, before its delete), or sent when the ack failed. Looked up first.
        self.doubtful: Set[int] = set()
        self._renew_first = False
        # Batch mode (the worker's loop): sends do not wait for their acks; ``wait`` collects
        # them all at once before the batch's offsets are committed.
        self.deferred = False
        self.inflight: List[Tuple[int, Message, Any]] = []
        self._holding = False  # see holding()
        self._held: Optional[Connection] = None

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """For a batch: its transactions run on one connection held for the whole batch, so none
        pays a pool checkout (and its liveness ping) of its own. A held connection that fails is
        dropped; the batch's next transaction takes a pooled one (pinged) again."""
        self._holding = True
        try:
            yield
        finally:
            held, self._holding, self._held = self._held, False, None
            if held is not None:
                try:
                    held.close()
                except Exception as exc:  # a broken connection: the pool replaces it
                    log.debug("closing a held store connection: %s", exc)

    def _run(self, work: Callable[[Connection], T]) -> T:
        if not self._holding:
            with self.engine.begin() as conn:
                return work(conn)
        conn = self._held
        if conn is None:
            conn = self._held = self.engine.connect()
        try:
            with conn.begin():
                return work(conn)
        except BaseException:
            self._held = None  # whatever failed, a fresh (pinged) connection next time
            try:
                conn.invalidate()
                conn.close()
            except Exception as exc:
                log.debug("dropping a held store connection: %s", exc)
            raise

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a store transaction that also deletes published rows not deleted yet
        (the store was down when they were published)."""
        deleting = list(self.sent)

        def run(conn: Connection) -> T:
            outbox.remove(conn, deleting)
            return work(conn)

        result = in_store(self._run, run)
        self.sent = self.sent[len(deleting):]
        return result

    def conclude(self, change: Callable[[Connection], bool], if_applied: Sequence[Message] = (),
                 always: Sequence[Message] = ()) -> bool:
        """Apply ``change`` and add to the outbox ``if_applied`` (only if it applied) and
        ``always``, in one transaction; then publish them. Returns whether the change applied.
        Raises StoreUnavailable when nothing could be written, KafkaUnavailable when it was
        written but not (all) published: the rest waits in ``unsent`` and in the outbox."""
        def work(conn: Connection) -> Tuple[bool, List[Message]]:
            applied = change(conn)
            return applied, list(always) + (list(if_applied) if applied else [])

        return self.write(work)

    def write(self, work: Callable[[Connection], Tuple[T, Sequence[Message]]]) -> T:
        """``work(conn)`` returns (a result, the messages it implies): both in one transaction,
        then the messages published. Returns the result; raises as ``conclude`` does."""
        def run(conn: Connection) -> Tuple[T, List[Tuple[int, Message]]]:
            result, messages = work(conn)
            return result, outbox.add(conn, self.owner, messages, self.lease) if messages else []

        result, rows = self.transaction(run)
        self.unsent.extend(rows)
        self.flush()
        return result

    def flush(self) -> None:
        """Publish what is unsent, in order, each acknowledged; KafkaUnavailable at the first
        failure. A message Kafka can never take (over its size limit) is dropped, loudly, rather
        than stall every partition of this worker behind it."""
        if not self.unsent:
            return
        if self._renew_first:
            # Kafka failed before: the lease may have run out meanwhile, and another worker taken
            # a row over. Publish only what is still ours (renewing our lease on the rest).
            mine = in_store(outbox.renew, self.engine, self.owner, [i for i, _m in self.unsent], self.lease)
            lost = [i for i, _m in self.unsent if i not in mine]
            if lost:
                log.warning("outbox rows %s were taken over by another worker", lost)
            self.unsent = [(i, m) for i, m in self.unsent if i in mine]
            self.doubtful &= mine
        if self.doubtful:
            self._skip_published()
        while self.unsent:
            row_id, m = self.unsent[0]
            try:
                if self.deferred:
                    self.inflight.append((row_id, m, self.queue.send_async(m.topic, m.key, m.value, m.headers or None)))
                else:
                    self.queue.send(m.topic, m.key, m.value, m.headers or None)
                    self.sent.append(row_id)
            except (QueueUnavailable, KafkaError) as exc:
                self._refused(row_id, m, exc)
            self.unsent.pop(0)
        if not self.deferred:
            self._renew_first = False
            self._forget_sent()

    def _refused(self, row_id: int, m: Message, exc: Exception) -> None:
        """A send (or its ack) failed: drop a message Kafka can never take; for anything else,
        KafkaUnavailable (the caller keeps the message to publish)."""
        if isinstance(exc.__cause__ or exc, PERMANENT):
            log.error("outbox row %d (%s, key %r) can never be published (%s); dropped",
                      row_id, m.topic, m.key, (exc.__cause__ or exc).__class__.__name__)
            self.sent.append(row_id)  # deleted with the published ones: not taken over again and again
            return
        self._renew_first = True
        self.doubtful.add(row_id)  # it may have been written all the same
        raise KafkaUnavailable("kafka unavailable (%s)" % exc) from exc

    def _skip_published(self) -> None:
        """Of the rows in doubt, those whose message Kafka holds already are not sent again (and
        are deleted as sent). KafkaUnavailable when Kafka cannot tell: nothing is sent then."""
        rows = [(i, m, message_id(m.headers)) for i, m in self.unsent if i in self.doubtful]
        try:
            found = self.queue.find_published([(m.topic, m.key, mid, m.written_at) for _i, m, mid in rows if mid])
        except (QueueUnavailable, KafkaError) as exc:
            self._renew_first = True
            raise KafkaUnavailable("kafka unavailable (%s)" % exc) from exc
        done = {i for i, _m, mid in rows if mid in found}
        if done:
            log.warning("outbox rows %s are on Kafka already (written before their row was deleted); "
                        "not sent again", sorted(done))
            self.unsent = [(i, m) for i, m in self.unsent if i not in done]
            self.sent.extend(sorted(done))
        self.doubtful.clear()

    def wait(self) -> None:
        """Batch mode: wait for the acks of everything sent. KafkaUnavailable if any failed: those
        (and only those: an acknowledged message is never sent twice) go back to ``unsent``, in
        order, to be published before anything else - once looked up, since a lost ack does not
        mean the message was not written."""
        failed: List[Tuple[int, Message]] = []
        error: Optional[Exception] = None
        inflight, self.inflight = self.inflight, []
        # One deadline for all: they were sent together, so a broker that works acknowledges them
        # together. Each is still asked (one that did get through is not sent twice), but a
        # producer that is stuck (kafka-python's, after a broker restart, never completes its
        # futures) costs one timeout in all, not one per message: seen in the drills as a worker
        # stalled for minutes after a Kafka restart.
        deadline = time.monotonic() + float(getattr(self.queue, "timeout", 10.0)) + 1
        for row_id, m, pending in inflight:
            try:
                self.queue.wait(pending, deadline - time.monotonic())
                self.sent.append(row_id)
            except (QueueUnavailable, KafkaError) as exc:
                try:
                    self._refused(row_id, m, exc)
                except KafkaUnavailable as down:
                    error = error or down
                    failed.append((row_id, m))
        if error is not None:
            self.unsent[:0] = failed
            raise error
        self._renew_first = False

    def _forget_sent(self) -> None:
        """Delete the rows of what was just published, at once: a worker that dies now leaves no
        published row behind for the relay to send a second time (but for the instant between
        Kafka's ack and this delete). If the store is down, the next transaction deletes them."""
        try:
            self.transaction(lambda conn: None)
        except Unavailable as exc:
            log.warning("published outbox rows %s not deleted yet (%s)", self.sent, exc)

    def tidy(self) -> None:
        """Delete the rows of published messages now (the worker is idle, or stopping)."""
        if self.sent:
            self.transaction(lambda conn: None)

    def relay(self, limit: int = 100) -> int:
        """Take over and publish messages whose writer is seen dead on this host, or whose
        writer's lease ran out; how many were taken. This worker's own rows are never taken:
        they are in ``unsent`` already."""
        dead = {o for o in in_store(outbox.owners, self.engine, self.owner) if owner.dead_here(o, self.owner)}
        taken = self._adopt(in_store(outbox.take_from_dead, self.engine, self.owner, dead, self.lease,
                                     defaults.DEAD_WRITER_QUIET_SECONDS, limit))
        if taken:
            log.warning("publishing %d outbox messages left by %s (no such process here any more)",
                        taken, ", ".join(sorted(dead)))
        if taken < limit:
            abandoned = self._adopt(in_store(outbox.take_abandoned, self.engine, self.owner, self.lease,
                                             limit - taken))
            if abandoned:
                log.warning("publishing %d outbox messages left by another worker (its lease ran out)", abandoned)
            taken += abandoned
        if taken:
            self.flush()
        return taken

    def _adopt(self, rows: List[Tuple[int, Message]]) -> int:
        """Rows just taken over: ours now (leased to us, in the store), so ours to publish at once,
        before any further store call can fail - nothing else would (another worker never takes
        the rows of a live owner before its lease runs out). Each is looked up on Kafka first."""
        self.unsent.extend(rows)
        self.doubtful.update(i for i, _m in rows)
        return len(rows)


#: Longest original record a dead letter carries (Kafka's default limit is 1 MB, and the headers
#: come on top): a longer one is cut, and says so in a header.
DEAD_LETTER_VALUE_MAX = 900 * 1024


def dead_letter(topic: str, record: Any, key: str, reason: str, attempts: int = 0,
                job_id: Any = None) -> Message:
    """The original bytes, untouched (cut at DEAD_LETTER_VALUE_MAX), with headers saying where they
    came from and why."""
    headers = [
        ("error", reason.encode("utf-8", "replace")[:4096]),
        ("source", ("%s[%d]@%d" % (record.topic, record.partition, record.offset)).encode()),
        ("attempts", str(attempts).encode()),
    ]
    value = record.value
    if value is not None and len(value) > DEAD_LETTER_VALUE_MAX:
        headers.append(("truncated", str(len(value)).encode()))
        value = value[:DEAD_LETTER_VALUE_MAX]
    return Message(topic, key, value, headers, job_id)
