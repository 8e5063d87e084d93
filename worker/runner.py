"""The job loop: poll -> claim -> run -> outcome + its messages (one transaction) -> publish ->
commit offset.

Guarantees, and where they come from:
- no job lost: the offset is committed only after the job's outcome is in the database and the
  messages it implies (retry, status event, dead letter) are acknowledged by Kafka;
- a message exists if and only if its state change happened: both are written in one
  transaction (the outbox, worker/publisher.py), so a store or Kafka failure between them can
  neither repeat a dead letter nor send `failed` for a job another delivery finished;
- re-delivery harmless: the store's conditional updates refuse to move a finished job, the
  result row is unique per job id, an attempt's outcome counts only while it is the job's latest
  claim, and a redelivered message of an attempt that already ran is skipped (its retry is on
  its way);
- nothing stalls a partition for ever: undecodable messages and unknown jobs go to the
  dead-letter topic and are committed; retries wait in their own topic, paused, not slept;
- nothing stays queued for ever: worker/sweep.py settles jobs whose message is nowhere.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy.engine import Engine

from app import metrics
from app.config import DEFAULTS
from app.jobqueue import JobQueue
from app.jobcontext import JobContext, running
from app.jobtypes import REGISTRY
from app.messages import PoisonMessage, decode_job, encode_result, job_id_of_key
from app.store import history, jobs as job_store
from app.topics import Topics

from . import defaults
from .consumer import FetchCoalescing, ForgetRevoked, drop_parked_records, finish_stalled_rejoin
from .control import JobTimedOut, deadline, disarm, shielded
from .errors import KafkaUnavailable, StoreUnavailable, Unavailable, describe
from .outcomes import Outcomes
from .publisher import Publisher
from .sweep import Every, sweep

log = logging.getLogger("worker")


class Decision(NamedTuple):
    """What was decided about a record, and the job it is about (None for a record naming none)."""

    job_id: Optional[str]
    apply: Callable[[], None]


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
        stranded_after: float = DEFAULTS["STRANDED_AFTER"],
        sweep_every: float = DEFAULTS["SWEEP_EVERY"],
        relay_every: float = defaults.RELAY_EVERY_SECONDS,
        outbox_lease: float = defaults.outbox_lease_seconds(DEFAULTS["JOB_MAX_SECONDS"]),
        batch_size: int = 1,
    ) -> None:
        self.consumer = consumer
        self.coalescing = FetchCoalescing(consumer)
        self.queue = queue
        self.engine = engine
        self.topics = topics
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self.publisher = Publisher(engine, queue, outbox_lease)
        #: This worker in the jobs' history (host:pid).
        self.name = "%s:%d" % (socket.gethostname(), os.getpid())
        self.outcomes = Outcomes(self.publisher, topics, max_attempts, backoff, backoff_max, lambda: self.clock(),
                                 actor=self.name)
        self.stranded_after = stranded_after
        self.sweep_marks: Dict[Tuple[str, int], Dict[TopicPartition, int]] = {}  # see worker/sweep.py
        self.sweep_timer = Every(sweep_every)
        self.relay_timer = Every(relay_every)
        self.paused_until: Dict[TopicPartition, float] = {}
        # Decisions about records (an outcome, a dead letter) not yet fully carried out because
        # the store or Kafka went down: applied when the same record comes back, instead of
        # handling it again (forgotten if its partition moves away: at-least-once).
        self.decided: Dict[Tuple[str, int, int], Decision] = {}
        self.stopping = False
        self.handled = 0
        self.executions = 0
        self.batch_size = batch_size
        # Batch mode (handle_batch): records handled but not committed yet, committed together
        # once their messages are acknowledged (checkpoint).
        self.batching = False
        self.uncommitted: Dict[TopicPartition, int] = {}  # partition -> last offset handled
        self.first_uncommitted: Dict[TopicPartition, int] = {}  # partition -> first offset handled
        self.uncommitted_keys: List[Tuple[Tuple[str, int, int], Optional[str]]] = []
        # The batch's set-based store work (see handle_batch): jobs claimed together before the
        # batch runs (record key -> (its message, the claimed job)), and successes run but not
        # stored yet (record key -> (job id, result JSON)), stored together at the checkpoint.
        self.ahead: Dict[Tuple[str, int, int], Tuple[Dict[str, Any], Dict[str, Any]]] = {}
        self.pending: Dict[Tuple[str, int, int], Tuple[str, str]] = {}

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topics.jobs, self.topics.retry], listener=ForgetRevoked(self))

    def request_stop(self) -> None:
        """Finish the current job, commit, then leave the group."""
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------
    def run(self, max_messages: Optional[int] = None, max_seconds: Optional[float] = None) -> int:
        """Handle messages until stopped, or until ``max_messages`` / ``max_seconds`` (for tests and
        drills). Returns the number handled. Always closes the consumer."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        poll_failures = 0  # polls that failed in a row
        try:
            while not self.stopping:
                if max_messages is not None and self.handled >= max_messages:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._resume_due()
                try:
                    limit = self.batch_size
                    if max_messages is not None:
                        limit = max(1, min(limit, max_messages - self.handled))
                    batch = self.poll(self._poll_timeout_ms(), limit)
                    poll_failures = 0
                except KafkaError as exc:
                    # The broker or the group is in a state kafka-python reports as an error
                    # (a restart, a rebalance): not a reason to exit; poll again shortly. A
                    # consumer that keeps failing is a real fault: exit, and supervisor restarts us.
                    poll_failures += 1
                    if poll_failures > defaults.POLL_FAILURES_MAX:
                        raise
                    log.warning("poll failed (%s: %s); polling again in %.0fs", exc.__class__.__name__, exc,
                                defaults.INFRA_RETRY_SECONDS)
                    time.sleep(defaults.INFRA_RETRY_SECONDS)
                    continue
                if batch:
                    self.handle_batch(batch)
                self.housekeeping(idle=not batch)
        finally:
            log.info("worker stopping after %d messages (%d executions)", self.handled, self.executions)
            self._settle_before_leaving()
            try:
                self.publisher.tidy()  # published rows are not left to look abandoned later
            except Exception as exc:  # stopping anyway; the lease covers them
                log.warning("could not delete published outbox rows on the way out: %s", exc)
            self.consumer.close(autocommit=False)
        return self.handled

    def _settle_before_leaving(self) -> None:
        """Outcomes decided but not stored (the store failed; their records were to come back):
        one more try, so that the partitions' next owner finds those jobs finished rather than
        running (a crash charged, the job run again). Their offsets stay uncommitted: the next
        owner skips the finished jobs. Claims kept from a failed release are released."""
        for key, decision in list(self.decided.items()):
            try:
                self._settle(key, decision)
            except Exception as exc:  # still down: at-least-once, as for a worker that dies
                log.warning("%d outcomes not stored before leaving (%s)", len(self.decided), describe(exc))
                return  # one try in all: a store that is down must not hold up the stop
        self._release_ahead()

    def poll(self, timeout_ms: int, limit: int) -> Dict[TopicPartition, List[Any]]:
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=limit)
        self.coalescing.after_poll(sum(len(records) for records in batch.values()))
        if finish_stalled_rejoin(self.consumer):
            log.warning("the group rejoin that started in an earlier poll was left unfinished by kafka-python; rejoining")
        return batch

    def housekeeping(self, idle: bool) -> None:
        """Between records: delete published outbox rows when idle, take over abandoned ones, sweep
        for stranded jobs. Each is bounded; a store or Kafka outage only postpones them."""
        try:
            if idle:
                self.publisher.flush()  # what waits for Kafka (renewing its lease), and...
                self.publisher.tidy()  # ...the rows of what went out
            if self.relay_timer.due():
                self.publisher.relay()
            if self.sweep_timer.due():
                sweep(self, self.stranded_after)
        except Unavailable as exc:
            log.warning("housekeeping postponed: %s", exc)
        except Exception:  # never the loop: it is housekeeping
            log.exception("housekeeping failed; trying again later")

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
                    self._resume(tp)
                    log.debug("%s[%d]: resumed", tp.topic, tp.partition)
        # A pause and its time to end go together. A partition paused without one would never be
        # fetched again (its jobs stranded, and the sweep blind to them: their messages are still
        # there); a time to end without the pause would make the loop drop the partition's
        # records as if a pause had rewound it. The rebalance listener keeps the two together
        # (worker/consumer.py); this keeps them together whatever kafka-python does next.
        paused = self.consumer.paused()
        for tp in paused:
            if tp not in self.paused_until:
                log.warning("%s[%d]: paused with no time to resume; resumed", tp.topic, tp.partition)
                self._resume(tp)
        for tp in [tp for tp in self.paused_until if tp not in paused]:
            log.warning("%s[%d]: a time to resume, but not paused; forgotten", tp.topic, tp.partition)
            del self.paused_until[tp]

    def _resume(self, tp: TopicPartition) -> None:
        self.consumer.resume(tp)
        drop_parked_records(self.consumer, tp)

    def _commit(self, offsets: Dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (partition -> last offset handled) in one request."""
        where = ", ".join("%s[%d]@%d" % (tp.topic, tp.partition, o) for tp, o in sorted(offsets.items()))
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in offsets.items()})
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner gets the messages again, harmlessly.
            log.warning("commit of %s failed (%s); redelivered", where, exc.__class__.__name__)
        except KafkaError as exc:
            # The coordinator is unreachable (e.g. the broker is restarting). The outcomes are
            # already stored, so carry on: the next commit on these partitions covers these
            # offsets too, and a redelivery in between is skipped. Crashing would only add a restart.
            log.warning("commit of %s failed (%s); a later commit covers it", where, exc.__class__.__name__)

    def _done(self, tp: TopicPartition, record: Any, key: Tuple[str, int, int], job_id: Optional[str]) -> None:
        """``record`` is handled: commit it now, or, in a batch, at the next checkpoint."""
        self.handled += 1
        if not self.batching:
            self._commit({tp: record.offset})
            return
        self.uncommitted[tp] = record.offset
        self.first_uncommitted.setdefault(tp, record.offset)
        self.uncommitted_keys.append((key, job_id))

    # -- a batch of records ---------------------------------------------------------------------
    def handle_batch(self, batch: Dict[TopicPartition, List[Any]]) -> None:
        """Handle a poll's records with set-based store work: the jobs they name are claimed
        together (one statement), each is run, and the successes are stored together at the
        checkpoint (one transaction with their events); their messages are sent without waiting
        for each ack, and the offsets are committed together once every message is
        acknowledged. Anything not plain (a job not queued for that attempt - its worker died
        running it -, a retry not due, an undecodable record, a record seen before) goes the
        one-record way (``handle``), and a failed attempt is stored at once, on its own.

        A checkpoint comes at the end of the batch, and before a record when the last one is
        CHECKPOINT_SECONDS old, so a long job delays the commits (and the stored successes) of the
        records before it by at most its own run. A batch stops taking records after
        BATCH_SECONDS (well within max.poll.interval, even if its last job is the longest); the
        rest is fetched again by the next poll, and the jobs claimed for it are released."""
        started = last = time.monotonic()
        self.batching = self.publisher.deferred = True
        try:
            with self.publisher.holding():
                try:
                    self._claim_ahead(batch)
                    for tp, records in batch.items():
                        for record in records:
                            if tp in self.paused_until:
                                break  # paused mid-batch: the rest is fetched again after resume
                            now = time.monotonic()
                            if self.stopping or now - started > defaults.BATCH_SECONDS:
                                self.consumer.seek(tp, record.offset)  # the rest: at the next poll
                                break
                            if self.uncommitted and now - last > defaults.CHECKPOINT_SECONDS:
                                self.checkpoint()
                                last = now
                            self.handle(tp, record)
                finally:
                    self._release_ahead()
                    self.checkpoint()
        finally:
            self.batching = self.publisher.deferred = False

    def _claim_ahead(self, batch: Dict[TopicPartition, List[Any]]) -> None:
        """Claim in one statement the jobs of the batch's plain records: of each partition, the
        records up to the first that is not (undecodable, not due, handled before, or naming a
        job an earlier record of the batch names). Claimed jobs are run by ``handle`` without a
        claim of their own. Any trouble here only means one claim per record, as without it."""
        plain: List[Tuple[Tuple[str, int, int], Dict[str, Any]]] = []
        places: Dict[str, Any] = {}  # job id -> where its record is (history.where_of)
        seen = {job["id"] for _msg, job in self.ahead.values()}  # claims kept from an earlier batch
        now = self.clock()
        for tp, records in batch.items():
            if tp in self.paused_until:
                continue
            for record in records:
                key = (record.topic, record.partition, record.offset)
                if key in self.ahead:
                    continue  # claimed before (its release failed): runs as claimed
                if key in self.decided:
                    break
                try:
                    msg = decode_job(record.value, max_delay=self.backoff_max, now=now)
                except PoisonMessage as exc:  # ``handle`` says why; the job it names waits for it
                    seen.add(exc.job_id or job_id_of_key(getattr(record, "key", None)))
                    break
                except Exception:
                    break
                if (msg.get("not_before") and msg["not_before"] > now) or msg["job_id"] in seen:
                    break
                seen.add(msg["job_id"])
                # A job's last attempt is claimed by its own record: claimed ahead and charged for
                # a batch-mate's crash, it would be found running with no attempt left - and failed
                # as a crasher it never was.
                if msg["attempt"] < self.outcomes.policy(msg["type"])[0]:
                    plain.append((key, msg))
                    places[msg["job_id"]] = history.where_of(record)
        if len(plain) < 2:
            return  # one job: its own claim costs the same
        try:
            # One transaction: a store failing between the statements claims none (a claim that
            # went through unseen would be charged as a crash when its record claims it).
            claimed = self.publisher.transaction(lambda conn: job_store.claim_jobs(
                conn, [(m["job_id"], m["attempt"]) for _k, m in plain], self.name, places))
        except Exception as exc:  # the store is down, or worse: each record's own claim will say
            log.warning("claiming %d jobs together failed (%s); one at a time", len(plain), describe(exc))
            return
        for key, msg in plain:
            job = claimed.get(msg["job_id"])
            if job is not None:
                job["sent_at"] = msg.get("sent_at")
                self.ahead[key] = (msg, job)

    def _release_ahead(self, job_id: Optional[str] = None) -> bool:
        """Give back the jobs claimed ahead but not run (all, or the one of ``job_id``): queued
        again for the same attempt, so that their records, fetched again, claim them as if
        nothing happened - and never count a crash of a job that did not start. False when the
        release failed and the claims are kept."""
        if job_id is None:
            left, self.ahead = self.ahead, {}
        else:
            left = {k: v for k, v in self.ahead.items() if v[1]["id"] == job_id}
            for k in left:
                del self.ahead[k]
        if not left:
            return True
        claims = [(job["id"], job["attempts"]) for _msg, job in left.values()]
        try:
            released = self.publisher.transaction(lambda conn: job_store.release_jobs(conn, claims, self.name))
            log.debug("released %d of %d jobs claimed for the batch but not run", released, len(claims))
            return True
        except Exception as exc:
            # Kept as claimed: their records, fetched again, run them as such (no claim of their
            # own, which would count a crash); the next batch's end tries the release again.
            log.warning("could not release %d jobs claimed for the batch but not run (%s); kept as claimed",
                        len(claims), describe(exc))
            self.ahead.update(left)
            return False

    def checkpoint(self) -> bool:
        """Store the batch's successes so far (one transaction with their events), wait for the
        acks of what the batch sent, then commit its offsets (one request). If the store or
        Kafka failed, nothing is committed: what was stored has its messages waiting in the
        outbox, what was not is stored one job at a time when its record comes back (the
        partitions are rewound and paused a moment); nothing is run again."""
        uncommitted, first, keys = self.uncommitted, self.first_uncommitted, self.uncommitted_keys
        self.uncommitted, self.first_uncommitted, self.uncommitted_keys = {}, {}, []
        pending, self.pending = self.pending, {}
        failure: Optional[Exception] = None
        if pending:
            try:
                self.outcomes.succeeded_many(list(pending.values()))
            except KafkaUnavailable as exc:
                failure = exc  # stored; the outbox publishes what Kafka did not take
            except Exception as exc:  # not stored: the store is down, or refused one of them
                if not isinstance(exc, Unavailable):
                    log.exception("storing %d successes together failed; each on its own", len(pending))
                failure = exc
                for key, (job_id, result_json) in pending.items():
                    self.decided[key] = Decision(job_id, functools.partial(self.outcomes.succeeded, job_id,
                                                                           result_json))
        try:
            self.publisher.wait()
        except Unavailable as exc:
            failure = failure or exc
        if failure is not None:
            log.warning("%d records handled, their outcomes or messages not all stored and acknowledged (%s); "
                        "committed once they are", len(keys), describe(failure))
            for key, job_id in keys:
                self.decided.setdefault(key, Decision(job_id, lambda: None))  # written; the outbox publishes it
            for tp, offset in first.items():
                self._pause(tp, offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
            self.handled -= len(keys)
            return False
        if uncommitted:
            self._commit(uncommitted)
        return True

    # -- one message --------------------------------------------------------------------------
    def handle(self, tp: TopicPartition, record: Any) -> None:
        """Process one record and commit it, or rewind and pause its partition. Nothing a message
        or a job does escapes from here: it fails that job (or dead-letters that message), never
        the worker, so no input can crash-loop the consumer group."""
        where = "%s[%d]@%d" % (tp.topic, tp.partition, record.offset)
        key = (record.topic, record.partition, record.offset)
        job_id: Optional[str] = None
        try:
            self.publisher.flush()  # what an earlier record could not publish goes out first
            decided = self.decided.get(key)
            if decided is not None:
                # This record was handled before, and the store or Kafka failed after: finish
                # that (store the outcome, or nothing left but the publishing done just now).
                job_id = decided.job_id
                self._settle(key, decided)
            elif key in self.ahead:
                msg, job = self.ahead.pop(key)  # claimed with the batch
                job_id = msg["job_id"]
                self.execute(job, record, key, defer=True)
            else:
                msg = decode_job(record.value, max_delay=self.backoff_max, now=self.clock())
                job_id = msg["job_id"]
                if msg.get("not_before") and msg["not_before"] > self.clock():
                    self._pause(tp, record.offset, msg["not_before"])  # a retry not yet due
                    return
                if not self._one_at_a_time(job_id):
                    self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
                    return  # its job's other record is not settled yet: this one comes again
                self.process(msg, record, key)
        except Unavailable as exc:
            log.warning("%s: job %s: %s; will try again in %.0fs", where, job_id, exc, defaults.INFRA_RETRY_SECONDS)
            self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
            return
        except PoisonMessage as exc:
            log.error("%s: poison message: %s", where, exc)
            # Our producers key every message by its job id: an undecodable payload still names
            # its job that way, and that job is failed rather than left queued for ever.
            job_id = exc.job_id or job_id_of_key(getattr(record, "key", None))
            if job_id is not None and not self._one_at_a_time(job_id):
                self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
                return
            if not self._reject(tp, record, key, job_id, "rejected message: %s" % exc):
                return
        except Exception as exc:  # a bug, or an input nobody foresaw: that job fails, the worker lives on
            log.exception("%s: job %s: unexpected error; failing the job", where, job_id)
            if not self._reject(tp, record, key, job_id, "worker error: " + describe(exc)):
                return
        self._done(tp, record, key, job_id)

    def _settle(self, key: Tuple[str, int, int], decision: "Decision") -> None:
        """Apply a decision about a record (an outcome to store, a record to dead-letter), so that
        a record that comes back after a failure is never handled twice: if the store was down,
        the same decision is applied then (the job is not run again); if only Kafka was, what is
        left is publishing, which the outbox does (nothing is written twice)."""
        self.decided[key] = decision
        try:
            decision.apply()
        except StoreUnavailable:
            raise  # stays decided
        except KafkaUnavailable:
            self.decided[key] = Decision(decision.job_id, lambda: None)  # written; the outbox publishes it
            raise
        except BaseException:
            del self.decided[key]
            raise
        del self.decided[key]

    def _reject(self, tp: TopicPartition, record: Any, key: Tuple[str, int, int], job_id: Optional[str],
                reason: str) -> bool:
        """Dead-letter a record that cannot be processed (and fail its job). True when done; False
        when the partition was paused to try again later (the store or Kafka is down, or worse)."""
        try:
            self._settle(key, Decision(job_id, lambda: self.outcomes.reject(record, job_id, reason)))
            return True
        except Exception as exc:  # Unavailable, or worse: never the process
            log.error("%s[%d]@%d: could not dead-letter (%s); will try again in %.0fs", tp.topic, tp.partition,
                      record.offset, exc, defaults.INFRA_RETRY_SECONDS)
            self._pause(tp, record.offset, self.clock() + defaults.INFRA_RETRY_SECONDS)
            return False

    def process(self, msg: Dict[str, Any], record: Any, key: Tuple[str, int, int]) -> None:
        job_id = msg["job_id"]
        # The claim and its `claimed` step, in one transaction.
        job = self.publisher.transaction(lambda conn: job_store.claim_job(
            conn, job_id, self.outcomes.policy(msg["type"])[0], msg["attempt"], actor=self.name,
            where=history.where_of(record)))
        if job is None:
            self._settle(key, Decision(job_id, lambda: self.outcomes.skipped(self.engine, job_id, record)))
            return
        if job["stale"]:
            log.info("job %s: attempt %d already ran (the job is %s, attempt %d); redelivery skipped",
                     job_id, msg["attempt"], job["status"].value, job["attempts"])
            return
        job["sent_at"] = msg.get("sent_at")
        if job["exhausted"]:
            # Every attempt so far died with its worker (SIGKILL, OOM...): running it again would
            # take down one worker after another. Fail it instead, as an operator would.
            error = "crashed the worker %d times" % (job["crashes"] + 1)
            self._settle(key, Decision(job_id, lambda: self.outcomes.give_up(job, record, error, crashed=True)))
            return
        self.execute(job, record, key)

    def _one_at_a_time(self, job_id: str) -> bool:
        """Before a record takes the one-record way: if its job is one of the batch's - claimed
        ahead for another record, or run with its success not stored yet -, settle that first,
        so the record's own claim finds the job as it really is (not running, which would count
        as a crash). False when that cannot be done now (the store or Kafka failed, or another
        record of the job waits to be settled): the record must come again later."""
        if any(j == job_id for j, _r in self.pending.values()) and not self.checkpoint():
            return False
        if any(d.job_id == job_id for d in self.decided.values()):
            return False
        return self._release_ahead(job_id)  # False: kept, not released

    def execute(self, job: Dict[str, Any], record: Any, key: Tuple[str, int, int], defer: bool = False) -> None:
        """Run a claimed job and settle its outcome: a failed attempt at once; a success at once,
        or, with ``defer`` (a job claimed with its batch), at the next checkpoint with the batch's
        other successes. A job its own record claimed (found running: its worker died) is
        concluded at once, so that, if a job that kills every worker follows it, it is not
        charged again and again."""
        job_id = job["id"]
        if job.get("cancel_requested_at") is not None:  # its cancel came first: not run at all
            self._settle(key, Decision(job_id, functools.partial(self.outcomes.cancelled, job_id)))
            return
        log.info("job %s: -> running (attempt %d of %d)", job_id, job["attempts"], self.outcomes.policy(job["type"])[0])
        jt = REGISTRY.get(job["type"])
        self.executions += 1
        self.outcomes.types[job_id] = job["type"]
        sent = job.get("sent_at")
        if job["attempts"] == 1 and isinstance(sent, (int, float)):  # time on Kafka of its first message
            wait = max(0.0, time.time() - sent)
            metrics.safely(lambda: metrics.worker().queue_wait.labels(job["type"]).observe(wait))
        try:
            if jt is None:
                raise LookupError("unknown job type %r" % job["type"])
            args = jt.load_args(job["args"])
        except Exception as exc:  # an unknown type or args its schema refuses: no attempt can succeed
            outcome = functools.partial(self.outcomes.failed_attempt, job, record, describe(exc), permanent=True)
        else:
            started = time.perf_counter()
            # The job may look for a cancel request (app/jobcontext.py); its type's timeout bounds the run.
            ask = functools.partial(shielded, functools.partial(job_store.cancel_requested, self.engine, job_id))
            context = JobContext(job_id, job["attempts"], ask)
            try:
                try:
                    with running(context), deadline(jt.run_seconds()):
                        value = jt.run(args)
                finally:
                    disarm()  # whatever happened in there, no alarm reaches the worker's own code
                # Results are checked here, with the job: a result that is not strict JSON fails the
                # attempt like an exception would (SystemExit too: a job cannot end the worker).
                result_json = encode_result(value)
            except JobTimedOut as exc:  # the worker carries on at once, well within its poll interval
                _count_run(job["type"], "timed_out", time.perf_counter() - started)
                outcome = functools.partial(self.outcomes.failed_attempt, job, record, str(exc), permanent=False)
            except (Exception, SystemExit) as exc:  # a job may raise anything: the job failing, not us
                _count_run(job["type"], "failed", time.perf_counter() - started)
                outcome = functools.partial(self.outcomes.failed_attempt, job, record, describe(exc), permanent=False)
            else:
                _count_run(job["type"], "succeeded", time.perf_counter() - started)
                if defer:
                    self.pending[key] = (job_id, result_json)
                    return
                outcome = functools.partial(self.outcomes.succeeded, job_id, result_json)
        self._settle(key, Decision(job_id, outcome))


def _count_run(job_type: str, outcome: str, seconds: float) -> None:
    """A run's figures (app/metrics.py): its outcome and time (a finished job is counted when its
    outcome is stored, worker/outcomes.py)."""
    def record() -> None:
        found = metrics.worker()
        found.attempts.labels(job_type, outcome).inc()
        found.run_seconds.labels(job_type).observe(seconds)

    metrics.safely(record)
