"""What the end of a job (or of a record that cannot be a job) writes and sends.

Each outcome is one store transaction with the messages it implies (worker/publisher.py): a
success with its `succeeded` event; a failed attempt with its retry (after backoff), or, once
attempts are used up, `failed` with its dead letter and `failed` event; a record that cannot be
processed with its dead letter. A change that no longer applies (another delivery claimed or
finished the job meanwhile) writes and sends nothing."""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from app import metrics
from app.jobtypes import REGISTRY
from app.messages import encode_event, encode_job
from app.store import jobs as job_store
from app.store.outbox import Message
from app.topics import Topics

from . import defaults
from .errors import in_store
from .publisher import Publisher, dead_letter

log = logging.getLogger("worker")


class Outcomes:
    def __init__(self, publisher: Publisher, topics: Topics, max_attempts: int, backoff: float,
                 backoff_max: float, clock: Callable[[], float], actor: Optional[str] = None) -> None:
        self.publisher = publisher
        self.topics = topics
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self.actor = actor  # the worker, in the jobs' history
        # job id -> type of the jobs run and not concluded yet, for the metrics of their outcome.
        self.types: Dict[str, str] = {}

    def succeeded(self, job_id: str, result_json: str) -> None:
        def work(conn: Any) -> Tuple[str, List[Message]]:
            if job_store.store_success(conn, job_id, result_json, self.actor):
                return "succeeded", [self._succeeded_event(job_id, result_json)]
            return self._cancelled_instead(conn, job_id), []

        outcome = self.publisher.write(work)
        _log_success(job_id, outcome)
        self._count_finished([job_id] if outcome in ("succeeded", "cancelled") else [], outcome)

    def _cancelled_instead(self, conn: Any, job_id: str) -> str:
        """An attempt's outcome that did not apply: "cancelled" if that is because the job's cancel
        was requested while it ran (it is cancelled now, in the caller's transaction), else
        "elsewhere" (another delivery has the job)."""
        return "cancelled" if job_store.cancel_requested_jobs(conn, [job_id], self.actor) else "elsewhere"

    def cancelled(self, job_id: str) -> None:
        """A job claimed although its cancel was requested (found running after its worker died, or
        queued again): it ends cancelled, not run."""
        outcome = self.publisher.write(lambda conn: (self._cancelled_instead(conn, job_id), []))
        log.info("job %s: claimed with its cancel requested: %s", job_id, outcome)
        if outcome == "cancelled":
            self._count_finished([job_id], outcome)

    def _count_finished(self, job_ids: List[str], outcome: str) -> None:
        """Jobs that reached an end state (stored): joblab_jobs_finished_total."""
        def record() -> None:
            finished = metrics.worker().finished
            for job_id in job_ids:
                finished.labels(self.types.pop(job_id, "(unknown)"), outcome).inc()

        if job_ids:
            metrics.safely(record)
        if len(self.types) > 10000:  # outcomes that never came (a crash path): forget them
            self.types.clear()

    def policy(self, job_type: str) -> Tuple[int, Any]:
        """(max attempts, backoff) of ``job_type``: its own (app/jobtypes.py), else the settings'."""
        jt = REGISTRY.get(job_type)
        attempts = jt.max_attempts if jt is not None and jt.max_attempts else self.max_attempts
        backoff = jt.backoff if jt is not None and jt.backoff is not None else self.backoff
        return attempts, backoff

    def delay(self, job_type: str, attempt: int) -> float:
        """Seconds before the retry after failed attempt ``attempt``: never more than backoff_max
        (a retry later than that would be refused as poison by decode_job)."""
        backoff = self.policy(job_type)[1]
        try:
            seconds = float(backoff(attempt)) if callable(backoff) else defaults.backoff_seconds(
                attempt, float(backoff), self.backoff_max)
        except Exception as exc:  # a type's backoff function that fails: the settings' backoff
            log.warning("backoff of %r failed (%s); using the default", job_type, exc.__class__.__name__)
            seconds = defaults.backoff_seconds(attempt, self.backoff, self.backoff_max)
        if math.isnan(seconds):  # a type's function that answered NaN: the settings' first delay
            return self.backoff
        return min(self.backoff_max, max(0.0, seconds))

    def succeeded_many(self, outcomes: List[Tuple[str, str]]) -> List[str]:
        """``succeeded`` for many jobs ((job id, result JSON) each) in ONE transaction: their state
        changes, result rows and `succeeded` events together. Returns the ids that succeeded now."""
        results = dict(outcomes)

        def work(conn: Any) -> Tuple[Tuple[List[str], List[str]], List[Message]]:
            applied = job_store.store_successes(conn, outcomes, self.actor)
            stored = set(applied)
            rest = [i for i, _r in outcomes if i not in stored]
            cancelled = job_store.cancel_requested_jobs(conn, rest, self.actor) if rest else []
            return (applied, cancelled), [self._succeeded_event(i, results[i]) for i in applied]

        applied, cancelled = self.publisher.write(work)
        self._count_finished(applied, "succeeded")
        self._count_finished(cancelled, "cancelled")
        if log.isEnabledFor(logging.INFO):
            done, stopped = set(applied), set(cancelled)
            for job_id, _result in outcomes:
                _log_success(job_id, "succeeded" if job_id in done else "cancelled" if job_id in stopped else "elsewhere")
        return applied

    def _succeeded_event(self, job_id: str, result_json: str) -> Message:
        return Message(self.topics.succeeded, job_id, encode_event(job_id, "succeeded", result_json=result_json),
                       job_id=job_id)

    def failed_attempt(self, job: Dict[str, Any], record: Any, error: str, permanent: bool) -> None:
        job_id, attempt = job["id"], job["attempts"]
        if attempt >= self.policy(job["type"])[0] or permanent:
            self.give_up(job, record, error)
            return
        delay = self.delay(job["type"], attempt)
        retry = Message(self.topics.retry, job_id, encode_job(job_id, job["type"], job["args"], attempt=attempt + 1,
                                                              not_before=self.clock() + delay), job_id=job_id)

        def work(conn: Any) -> Tuple[str, List[Message]]:
            if job_store.requeue_job(conn, job_id, attempt, error, delay, self.actor):  # never a cancel requested
                return "retried", [retry]
            # A cancel requested while it ran ends the job here, rather than a retry.
            return self._cancelled_instead(conn, job_id), []

        outcome = self.publisher.write(work)
        # %r: the error carries user text (a `fail` job's message); quoted, it cannot forge log lines.
        if outcome == "retried":
            log.warning("job %s: attempt %d failed (%r); retry in %.1fs", job_id, attempt, error, delay)
        elif outcome == "cancelled":
            log.info("job %s: attempt %d failed (%r); cancelled, as requested while it ran", job_id, attempt, error)
            self._count_finished([job_id], outcome)
        else:
            log.warning("job %s: attempt %d failed (%r), but a later delivery has the job now; it decides",
                        job_id, attempt, error)

    def give_up(self, job: Dict[str, Any], record: Any, error: str, crashed: bool = False) -> None:
        """Attempts used up (or the job can never succeed): failed, dead-lettered, `failed` event -
        all or nothing, and nothing when another delivery has the job now (or finished it)."""
        job_id, attempt = job["id"], job["attempts"]
        messages = [dead_letter(self.topics.dead, record, job_id, error, attempt, job_id=job_id),
                    Message(self.topics.failed, job_id, encode_event(job_id, "failed", error=error, attempts=attempt),
                            job_id=job_id)]
        def work(conn: Any) -> Tuple[str, List[Message]]:
            if job_store.store_failure(conn, job_id, error, attempt=attempt, crashed=crashed, actor=self.actor,
                                       uncancelled=not crashed):
                return "failed", messages
            return "elsewhere" if crashed else self._cancelled_instead(conn, job_id), []

        outcome = self.publisher.write(work)
        if outcome == "failed":
            log.error("job %s: running -> failed after %d attempts: %r", job_id, attempt, error)
            _count_dead_letter()
            self._count_finished([job_id], outcome)
        elif outcome == "cancelled":
            log.info("job %s: attempt %d failed (%r); cancelled, as requested while it ran", job_id, attempt, error)
            self._count_finished([job_id], outcome)
        else:
            log.warning("job %s: would fail after attempt %d (%r), but a later delivery has the job now",
                        job_id, attempt, error)

    def reject(self, record: Any, job_id: Optional[str], reason: str) -> None:
        """Dead-letter a record that cannot be processed, and fail the job it names (so that job
        never stays queued), with its `failed` event. The record is dead-lettered whether or not
        its job could still be failed."""
        letter = dead_letter(self.topics.dead, record, job_id or "poison", reason, job_id=job_id)
        event = [] if job_id is None else [
            Message(self.topics.failed, job_id, encode_event(job_id, "failed", error=reason), job_id=job_id)]
        applied = self.publisher.conclude(
            lambda conn: job_id is not None and job_store.reject_job(conn, job_id, reason), if_applied=event,
            always=[letter])
        _count_dead_letter()
        if applied and job_id is not None:
            self._count_finished([job_id], "failed")

    def skipped(self, engine: Any, job_id: str, record: Any) -> None:
        """The job is unknown or already finished: a duplicate delivery. (A finished job's messages
        went out with its outcome, through the outbox: nothing to send again.)"""
        existing = in_store(job_store.get_job, engine, job_id)
        if existing is not None:
            log.info("job %s: already %s; redelivery skipped", job_id, existing["status"].value)
            return
        log.error("job %s: not in the store; dead-lettering the message", job_id)
        self.publisher.conclude(lambda conn: False, always=[dead_letter(self.topics.dead, record, job_id, "unknown job id")])
        _count_dead_letter()


def _log_success(job_id: str, outcome: str) -> None:
    if outcome == "succeeded":
        log.info("job %s: running -> succeeded", job_id)
    elif outcome == "cancelled":
        log.info("job %s: ran to its end, but its cancel was requested meanwhile: cancelled", job_id)
    else:
        log.info("job %s: finished elsewhere meanwhile; result kept as stored", job_id)


def _count_dead_letter() -> None:
    metrics.safely(lambda: metrics.worker().dead_letters.inc())
