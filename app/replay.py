"""Dead letters sent again: read the dead-letter topic, pick the letters wanted (by job id, type,
time), and replay each job they name - failed -> queued with a fresh attempt budget, its history
saying who replayed it (app/store/jobs.replay_job), then produced to the jobs topic. Used by
`flask --app app jobs replay` and the dashboard's Replay buttons.

Replaying is harmless to repeat: a job that is not `failed` (replayed already, running again,
succeeded since) is left alone. Letters that are not a job message at all (poison: undecodable)
are listed and skipped: there is nothing to run."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from .jobqueue import RECONNECT_BACKOFF_MAX_MS, JobQueue, QueueUnavailable
from .messages import PoisonMessage, decode_job, encode_job
from .store import jobs as job_store

log = logging.getLogger(__name__)

#: Longest a read of the dead-letter topic may take (s).
READ_SECONDS = 30.0


@dataclass
class DeadLetter:
    partition: int
    offset: int
    at: datetime  # when it was dead-lettered (the record's timestamp), naive UTC
    job_id: Optional[str]
    job_type: Optional[str]
    error: str
    poison: Optional[str] = None  # why it is not a job message (then there is nothing to replay)


def _header(record: Any, name: str) -> str:
    for key, value in record.headers or []:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return ""


def letter_of(record: Any) -> DeadLetter:
    at = datetime.fromtimestamp(record.timestamp / 1000.0, timezone.utc).replace(tzinfo=None)
    error = _header(record, "error")
    try:
        msg = decode_job(record.value)
    except PoisonMessage as exc:
        return DeadLetter(record.partition, record.offset, at, exc.job_id, None, error, poison=str(exc))
    return DeadLetter(record.partition, record.offset, at, msg["job_id"], msg["type"], error)


def read_dead_letters(bootstrap: str, topic: str, since: Optional[datetime] = None,
                      seconds: float = READ_SECONDS) -> List[DeadLetter]:
    """Every letter in ``topic`` (from ``since``, naive UTC, on), oldest first per partition.
    Reads up to the end offsets seen at the start; raises QueueUnavailable when Kafka does not
    answer, or when the end is not reached within ``seconds``."""
    ms = int(min(seconds, 10.0) * 1000)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                 client_id="joblab-replay", bootstrap_timeout_ms=ms, request_timeout_ms=ms + 1000,
                                 reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)
    except Exception as exc:
        raise QueueUnavailable("kafka: %s" % exc.__class__.__name__) from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            raise QueueUnavailable("no topic %s" % topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        if since is not None:
            wanted = int(since.replace(tzinfo=timezone.utc).timestamp() * 1000)
            for tp, found in consumer.offsets_for_times({tp: wanted for tp in tps}).items():
                consumer.seek(tp, ends[tp] if found is None else found.offset)
        letters: List[DeadLetter] = []
        deadline = time.monotonic() + seconds
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise QueueUnavailable("reading %s took longer than %.0f s" % (topic, seconds))
            for tp, records in consumer.poll(timeout_ms=500, max_records=500).items():
                letters.extend(letter_of(r) for r in records if r.offset < ends[tp])
        return sorted(letters, key=lambda x: (x.partition, x.offset))
    except QueueUnavailable:
        raise
    except Exception as exc:
        raise QueueUnavailable("kafka: %s" % exc.__class__.__name__) from exc
    finally:
        consumer.close()


def select(letters: Iterable[DeadLetter], ids: Iterable[str] = (), job_type: Optional[str] = None,
           since: Optional[datetime] = None) -> List[DeadLetter]:
    """The letters matching every filter given (ids: any of them)."""
    wanted = set(ids)
    return [x for x in letters
            if (not wanted or x.job_id in wanted) and (job_type is None or x.job_type == job_type)
            and (since is None or x.at >= since)]


@dataclass
class Replayed:
    job_id: str
    outcome: str  # replayed | would replay | skipped | not enqueued
    detail: str = ""


def replay_jobs(engine: Any, queue: JobQueue, job_ids: Iterable[str], actor: str,
                dry_run: bool = False) -> List[Replayed]:
    """Replay each job (once, however many letters name it): reset it in the store, then produce
    its message (the args as the store has them). A job Kafka then refuses stays queued with no
    message: the workers' sweep sends it (worker/sweep.py), as for a submit that died midway."""
    done: List[Replayed] = []
    wanted = list(dict.fromkeys(job_ids))
    for n, job_id in enumerate(wanted):
        job = job_store.get_job(engine, job_id)
        if job is None:
            done.append(Replayed(job_id, "skipped", "not in the store"))
            continue
        if job["status"].value != "failed":
            done.append(Replayed(job_id, "skipped", "the job is %s (replayed already?)" % job["status"].value))
            continue
        if (job["error"] or "").startswith(job_store.NOT_ENQUEUED):
            # Never a dead letter: its submit was answered 503 ("not accepted"), and its client
            # may well have submitted it again. Running it now could run that work twice.
            done.append(Replayed(job_id, "skipped", "never enqueued: its submit was refused (503)"))
            continue
        if dry_run:
            done.append(Replayed(job_id, "would replay", "%s, failed: %s" % (job["type"], job["error"])))
            continue
        job, replayed = job_store.replay_job(engine, job_id, actor)
        if not replayed or job is None:
            done.append(Replayed(job_id, "skipped", "the job changed meanwhile"))
            continue
        try:
            queue.send(queue.topics.jobs, job_id, encode_job(job_id, job["type"], job["args"]))
        except QueueUnavailable as exc:
            log.error("job %s: replayed, but Kafka refused its message (%s); the sweep will send it", job_id, exc)
            done.append(Replayed(job_id, "not enqueued", "queued; the workers' sweep sends it (%s)" % exc))
            # Kafka is down: stop here rather than wait a send timeout for each of the rest.
            done.extend(Replayed(rest, "not tried", "Kafka unavailable") for rest in wanted[n + 1:])
            break
        log.info("job %s: replayed by %s (%s)", job_id, actor, job["type"])
        done.append(Replayed(job_id, "replayed", job["type"]))
    return done


def summary(results: List[Replayed]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts
