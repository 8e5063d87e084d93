"""The job loop: poll -> claim -> run -> store (one transaction) -> publish -> commit offset.

Guarantees, and where they come from:
- no job lost: the offset is committed only after the job's outcome is in the database (and,
  for retries, after the retry message is acknowledged by Kafka);
- re-delivery harmless: the store's conditional updates refuse to move a finished job, and the
  result row is unique per job id; a redelivered finished job is skipped;
- nothing stalls a partition for ever: undecodable messages and unknown jobs go to the
  dead-letter topic and are committed; retries wait in their own topic, paused, not slept.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.jobqueue import JobQueue, QueueUnavailable
from app.jobtypes import REGISTRY
from app.messages import JOB_ID_PATTERN, PoisonMessage, decode_job, encode_event, encode_job, encode_result
from app.states import JobStatus
from app.store import jobs as job_store
from app.store import store_unavailable
from app.topics import Topics

from . import defaults

log = logging.getLogger("worker")

Headers = List[Tuple[str, bytes]]


class _Infrastructure(Exception):
    """The store or Kafka failed mid-job: retry the same message later, do not commit."""


class _ForgetRevoked(ConsumerRebalanceListener):
    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.worker.paused_until.pop(tp, None)
        if revoked:
            log.info("partitions revoked: %s", _fmt(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %s", _fmt(assigned))


def _drop_parked_records(consumer: KafkaConsumer, tp: TopicPartition) -> None:
    """Work around kafka-python 3.0.x: records already fetched for a partition when it is paused are
    parked and handed back after resume() only while the fetcher's in-line slot is None - which,
    after its first fetch, it never is again. The resumed partition is then never fetched again
    (retries stuck for good; found by `make drills`). We always seek() before pausing, so parked
    records are behind our position and would be discarded anyway: drop them so the partition is
    fetched afresh from the position we set."""
    fetcher = getattr(consumer, "_fetcher", None)
    for name in ("_paused_partition_records", "_paused_completed_fetches"):
        parked = getattr(fetcher, name, None)
        if isinstance(parked, dict):
            stale = parked.pop(tp, None)
            if stale is not None and hasattr(stale, "drain"):
                stale.drain()


#: Longest error text kept with a job (stored, published, put in dead-letter headers).
ERROR_MAX = 2000


def describe(exc: BaseException) -> str:
    """``Class: message`` of an exception, bounded, even if its ``__str__`` misbehaves."""
    try:
        text = str(exc)
    except Exception:
        text = "(unprintable)"
    return ("%s: %s" % (exc.__class__.__name__, text))[:ERROR_MAX]


def key_job_id(record: Any) -> Optional[str]:
    """The record's key when it has the shape of a job id, else None."""
    key = getattr(record, "key", None)
    try:
        text = key.decode("ascii") if isinstance(key, bytes) else None
    except UnicodeDecodeError:
        return None
    return text if text and JOB_ID_PATTERN.fullmatch(text) else None


def _fmt(tps: Any) -> str:
    return ", ".join(sorted("%s[%d]" % (tp.topic, tp.partition) for tp in tps)) or "none"


class Worker:
    """Runs jobs from ``consumer``; stores outcomes with ``engine``; produces with ``queue``."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        queue: JobQueue,
        engine: Engine,
        topics: Topics,
        max_attempts: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.consumer = consumer
        self.queue = queue
        self.engine = engine
        self.topics = topics
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self.paused_until: Dict[TopicPartition, float] = {}
        self.stopping = False
        self.handled = 0
        self.executions = 0

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topics.jobs, self.topics.retry], listener=_ForgetRevoked(self))

    def request_stop(self) -> None:
        """Finish the current job, commit, then leave the group."""
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------
    def run(self, max_messages: Optional[int] = None, max_seconds: Optional[float] = None) -> int:
        """Handle messages until stopped, or until ``max_messages`` / ``max_seconds`` (for tests and
        drills). Returns the number handled. Always closes the consumer."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self.stopping:
                if max_messages is not None and self.handled >= max_messages:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._resume_due()
                batch = self.consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=1)
                for tp, records in batch.items():
                    for record in records:
                        if tp in self.paused_until:
                            break  # paused mid-batch: the rest is fetched again after resume
                        self.handle(tp, record)
        finally:
            log.info("worker stopping after %d messages (%d executions)", self.handled, self.executions)
            self.consumer.close(autocommit=False)
        return self.handled

    def _poll_timeout_ms(self) -> int:
        if not self.paused_until:
            return defaults.POLL_TIMEOUT_MS
        due = min(self.paused_until.values()) - self.clock()
        return max(10, min(defaults.POLL_TIMEOUT_MS, int(due * 1000)))

    def _pause(self, tp: TopicPartition, offset: int, until: float) -> None:
        """Rewind ``tp`` to ``offset`` and stop fetching it until ``until`` (epoch seconds)."""
        self.consumer.seek(tp, offset)
        self.consumer.pause(tp)
        self.paused_until[tp] = until
        log.debug("%s[%d]: paused at %d for %.2fs", tp.topic, tp.partition, offset, until - self.clock())

    def _resume_due(self) -> None:
        now = self.clock()
        for tp, until in list(self.paused_until.items()):
            if until <= now:
                del self.paused_until[tp]
                if tp in self.consumer.assignment():
                    self.consumer.resume(tp)
                    _drop_parked_records(self.consumer, tp)
                    log.debug("%s[%d]: resumed at %s", tp.topic, tp.partition, self.consumer.position(tp))

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset + 1, "", -1)})
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner gets the message again, harmlessly.
            log.warning("commit of %s[%d]@%d failed (%s); it will be redelivered",
                        tp.topic, tp.partition, offset, exc.__class__.__name__)
        except KafkaError as exc:
            # The coordinator is unreachable (e.g. the broker is restarting). The outcome is already
            # stored, so carry on: the next commit on this partition covers this offset too, and
            # a redelivery in between is skipped. Crashing here would only add a restart.
            log.warning("commit of %s[%d]@%d failed (%s); a later commit covers it",
                        tp.topic, tp.partition, offset, exc.__class__.__name__)

    # -- one message --------------------------------------------------------------------------
    def handle(self, tp: TopicPartition, record: Any) -> None:
        """Process one record and commit it, or rewind and pause its partition. Nothing a message
        or a job does escapes from here: it fails that job (or dead-letters that message), never
        the worker, so no input can crash-loop the consumer group."""
        where = "%s[%d]@%d" % (tp.topic, tp.partition, record.offset)
        job_id: Optional[str] = None
        try:
            msg = decode_job(record.value, max_delay=self.backoff_max, now=self.clock())
            job_id = msg["job_id"]
            if msg.get("not_before") and msg["not_before"] > self.clock():
                self._pause(tp, record.offset, msg["not_before"])  # a retry not yet due
                return
            self.process(msg, record)
        except _Infrastructure as exc:
            log.warning("%s: job %s: %s; will try again in %.0fs", where, job_id, exc, defaults.INFRA_RETRY_SECONDS)
            self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
            return
        except PoisonMessage as exc:
            log.error("%s: poison message: %s", where, exc)
            # Our producers key every message by its job id: an undecodable payload still names
            # its job that way, and that job is failed rather than left queued for ever.
            if not self._reject(tp, record, exc.job_id or key_job_id(record), "rejected message: %s" % exc):
                return
        except Exception as exc:  # a bug, or an input nobody foresaw: that job fails, the worker lives on
            log.exception("%s: job %s: unexpected error; failing the job", where, job_id)
            if not self._reject(tp, record, job_id, "worker error: " + describe(exc)):
                return
        self._commit(tp, record.offset)
        self.handled += 1

    def _reject(self, tp: TopicPartition, record: Any, job_id: Optional[str], reason: str) -> bool:
        """Dead-letter a message that cannot be processed and fail its job (if it names one, so
        the job never stays queued). True when done; False when the partition was paused to try
        again later (the store or Kafka is down, or even this failed)."""
        try:
            self._dead_letter(record, key=job_id or "poison", reason=reason)
            if job_id is not None:
                self._store(job_store.reject_job, job_id, reason)
            return True
        except Exception as exc:  # _Infrastructure, or worse: never the process
            log.error("%s[%d]@%d: could not dead-letter (%s); will try again in %.0fs", tp.topic, tp.partition,
                      record.offset, exc, defaults.INFRA_RETRY_SECONDS)
            self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
            return False

    def process(self, msg: Dict[str, Any], record: Any) -> None:
        job_id = msg["job_id"]
        job = self._store(job_store.claim_job, job_id, self.max_attempts)
        if job is None:
            self._skip(job_id, msg, record)
            return
        if job["exhausted"]:
            # Every attempt so far died with its worker (SIGKILL, OOM...): running it again would
            # take down one worker after another. Fail it instead, as an operator would.
            error = "crashed the worker %d times" % (job["crashes"] + 1)
            self._give_up(job, record, error, crashed=True)
            return
        log.info("job %s: -> running (attempt %d of %d)", job_id, job["attempts"], self.max_attempts)
        jt = REGISTRY.get(job["type"])
        self.executions += 1
        try:
            if jt is None:
                raise LookupError("unknown job type %r" % job["type"])
            args = jt.schema().load(job["args"])
        except Exception as exc:  # an unknown type or args its schema refuses: no attempt can succeed
            self._failed_attempt(job, msg, record, describe(exc), permanent=True)
            return
        try:
            # Results are checked here, with the job: a result that is not strict JSON fails the
            # attempt like an exception would (SystemExit too: a job cannot end the worker).
            result_json = encode_result(jt.run(args))
        except (Exception, SystemExit) as exc:  # a job may raise anything; that is the job failing, not us
            self._failed_attempt(job, msg, record, describe(exc), permanent=False)
            return
        if self._store(job_store.store_success, job_id, result_json):
            log.info("job %s: running -> succeeded", job_id)
            self._publish(self.topics.succeeded, job_id, encode_event(job_id, "succeeded", result_json=result_json))
        else:
            log.info("job %s: finished elsewhere meanwhile; result kept as stored", job_id)

    def _skip(self, job_id: str, msg: Dict[str, Any], record: Any) -> None:
        """The job is unknown or already terminal: a duplicate delivery."""
        existing = self._store(job_store.get_job, job_id)
        if existing is None:
            log.error("job %s: not in the store; dead-lettering the message", job_id)
            self._dead_letter(record, key=job_id, reason="unknown job id")
            return
        log.info("job %s: already %s; redelivery skipped", job_id, existing["status"].value)
        if existing["status"] is JobStatus.SUCCEEDED:
            # The event may not have gone out before a crash; consumers dedupe by job id.
            result_json = self._store(job_store.get_result_json, job_id)
            self._publish(self.topics.succeeded, job_id, encode_event(job_id, "succeeded", result_json=result_json))

    def _failed_attempt(self, job: Dict[str, Any], msg: Dict[str, Any], record: Any, error: str,
                        permanent: bool) -> None:
        job_id, attempts = job["id"], job["attempts"]
        if attempts >= self.max_attempts or permanent:
            self._give_up(job, record, error)
            return
        delay = defaults.backoff_seconds(attempts, self.backoff, self.backoff_max)
        self._store(job_store.store_retry, job_id, error)
        retry = encode_job(job_id, job["type"], job["args"], attempt=attempts + 1, not_before=self.clock() + delay)
        self._publish(self.topics.retry, job_id, retry)
        # %r: the error carries user text (a `fail` job's message); quoted, it cannot forge log lines.
        log.warning("job %s: attempt %d failed (%r); retry in %.1fs", job_id, attempts, error, delay)

    def _give_up(self, job: Dict[str, Any], record: Any, error: str, crashed: bool = False) -> None:
        """Attempts used up (or the job can never succeed): dead-letter, publish `failed`, store it.
        Dead-letter first, then mark failed: a crash in between re-runs this and dead-letters the
        job again, rather than leaving a failed job missing from the topic."""
        job_id, attempts = job["id"], job["attempts"]
        self._dead_letter(record, key=job_id, reason=error, attempts=attempts)
        self._publish(self.topics.failed, job_id, encode_event(job_id, "failed", error=error, attempts=attempts))
        self._store(job_store.give_up if crashed else job_store.store_failure, job_id, error)
        log.error("job %s: running -> failed after %d attempts: %r", job_id, attempts, error)

    # -- the store ----------------------------------------------------------------------------
    def _store(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(engine, *args)``; a store that is down becomes _Infrastructure (try this message
        again later). Any other store error (bad data) propagates: it fails the job instead, since
        retrying it would stall the partition for ever."""
        try:
            return call(self.engine, *args)
        except SQLAlchemyError as exc:
            if store_unavailable(exc):
                raise _Infrastructure("store unavailable (%s)" % exc.__class__.__name__) from exc
            raise

    # -- producing ----------------------------------------------------------------------------
    def _publish(self, topic: str, key: str, value: bytes, headers: Optional[Headers] = None) -> None:
        try:
            self.queue.send(topic, key, value, headers)
        except (QueueUnavailable, KafkaError) as exc:
            raise _Infrastructure("kafka unavailable (%s)" % exc) from exc

    def _dead_letter(self, record: Any, key: str, reason: str, attempts: int = 0) -> None:
        """The original bytes, untouched, with headers saying where they came from and why."""
        headers = [
            ("error", reason.encode("utf-8", "replace")[:4096]),
            ("source", ("%s[%d]@%d" % (record.topic, record.partition, record.offset)).encode()),
            ("attempts", str(attempts).encode()),
        ]
        self._publish(self.topics.dead, key, record.value, headers)
