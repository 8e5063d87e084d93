"""What the end of a job (or of a record that cannot be a job) writes and sends.

Each outcome is one store transaction with the messages it implies (worker/publisher.py): a
success with its `succeeded` event; a failed attempt with its retry (after backoff), or, once
attempts are used up, `failed` with its dead letter and `failed` event; a record that cannot be
processed with its dead letter. A change that no longer applies (another delivery claimed or
finished the job meanwhile) writes and sends nothing."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from app import metrics
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

    def succeeded(self, job_id: str, result_json: str) -> None:
        applied = self.publisher.conclude(lambda conn: job_store.store_success(conn, job_id, result_json, self.actor),
                                          [self._succeeded_event(job_id, result_json)])
        _log_success(job_id, applied)

    def succeeded_many(self, outcomes: List[Tuple[str, str]]) -> List[str]:
        """``succeeded`` for many jobs ((job id, result JSON) each) in ONE transaction: their state
        changes, result rows and `succeeded` events together. Returns the ids that succeeded now."""
        results = dict(outcomes)

        def work(conn: Any) -> Tuple[List[str], List[Message]]:
            applied = job_store.store_successes(conn, outcomes, self.actor)
            return applied, [self._succeeded_event(i, results[i]) for i in applied]

        applied = self.publisher.write(work)
        if log.isEnabledFor(logging.INFO):
            done = set(applied)
            for job_id, _result in outcomes:
                _log_success(job_id, job_id in done)
        return applied

    def _succeeded_event(self, job_id: str, result_json: str) -> Message:
        return Message(self.topics.succeeded, job_id, encode_event(job_id, "succeeded", result_json=result_json),
                       job_id=job_id)

    def failed_attempt(self, job: Dict[str, Any], record: Any, error: str, permanent: bool) -> None:
        job_id, attempt = job["id"], job["attempts"]
        if attempt >= self.max_attempts or permanent:
            self.give_up(job, record, error)
            return
        delay = defaults.backoff_seconds(attempt, self.backoff, self.backoff_max)
        retry = Message(self.topics.retry, job_id, encode_job(job_id, job["type"], job["args"], attempt=attempt + 1,
                                                              not_before=self.clock() + delay), job_id=job_id)
        # %r: the error carries user text (a `fail` job's message); quoted, it cannot forge log lines.
        if self.publisher.conclude(lambda conn: job_store.requeue_job(conn, job_id, attempt, error, delay, self.actor), [retry]):
            log.warning("job %s: attempt %d failed (%r); retry in %.1fs", job_id, attempt, error, delay)
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
        if self.publisher.conclude(
                lambda conn: job_store.store_failure(conn, job_id, error, attempt=attempt, crashed=crashed,
                                                      actor=self.actor), messages):
            log.error("job %s: running -> failed after %d attempts: %r", job_id, attempt, error)
            _count_failed(job["type"])
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
        _count_failed("(unreadable)" if applied else None)

    def skipped(self, engine: Any, job_id: str, record: Any) -> None:
        """The job is unknown or already finished: a duplicate delivery. (A finished job's messages
        went out with its outcome, through the outbox: nothing to send again.)"""
        existing = in_store(job_store.get_job, engine, job_id)
        if existing is not None:
            log.info("job %s: already %s; redelivery skipped", job_id, existing["status"].value)
            return
        log.error("job %s: not in the store; dead-lettering the message", job_id)
        self.publisher.conclude(lambda conn: False, always=[dead_letter(self.topics.dead, record, job_id, "unknown job id")])
        _count_failed(None)


def _log_success(job_id: str, applied: bool) -> None:
    if applied:
        log.info("job %s: running -> succeeded", job_id)
    else:
        log.info("job %s: finished elsewhere meanwhile; result kept as stored", job_id)


def _count_failed(job_type: Optional[str]) -> None:
    """A dead letter written, and (with ``job_type``) the job it failed (app/metrics.py)."""
    def record() -> None:
        found = metrics.instruments()
        found.dead_letters.inc()
        if job_type is not None:
            found.finished.labels(job_type, "failed").inc()

    metrics.safely(record)
