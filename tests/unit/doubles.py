"""Doubles for driving the real Worker one record at a time: a scripted consumer, a Kafka queue
that records what is sent and refuses on cue, and helpers that hand the worker its records."""
from __future__ import annotations

import json
from collections import namedtuple
from typing import Any, Dict, List, Optional, Tuple

from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from app.jobqueue import QueueUnavailable
from app.messages import encode_job
from app.published import MESSAGE_ID
from app.store import jobs as js
from app.topics import Topics

Record = namedtuple("Record", "topic partition offset value key")
TOPICS = Topics.with_prefix("")
NOW = 1_000_000.0


class Consumer:
    """Records commits and seeks; partitions/offsets for the sweep come from ``lags``."""

    def __init__(self) -> None:
        self.commits: List[Tuple[str, int, int]] = []
        self.seeks = {}  # partition -> offset of its last seek()
        self.held: set = set()  # paused partitions
        self.lags = {}  # topic -> {partition: unconsumed records}
        self.batches: List[dict] = []  # what poll() hands out, one batch per call, then nothing
        self.closed = False

    def poll(self, timeout_ms: int = 0, max_records: int = 1) -> dict:
        return self.batches.pop(0) if self.batches else {}

    def close(self, autocommit: bool = True) -> None:
        self.closed = True

    def commit(self, offsets: Any) -> None:
        self.commits.extend((tp.topic, tp.partition, o.offset) for tp, o in offsets.items())

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks[tp] = offset

    def pause(self, tp: Any) -> None:
        self.held.add(tp)

    def resume(self, tp: Any) -> None:
        self.held.discard(tp)

    def paused(self) -> set:
        return set(self.held)

    def assignment(self) -> set:
        return set()

    # What the sweep asks: every partition ends at its lag; nothing committed.
    def partitions_for_topic(self, topic: str) -> Optional[set]:
        return set(self.lags[topic]) if topic in self.lags else None

    def end_offsets(self, tps: Any, timeout_ms: Optional[int] = None) -> dict:
        return {tp: self.lags[tp.topic][tp.partition] for tp in tps}

    def committed(self, tp: Any, timeout_ms: Optional[int] = None) -> Optional[int]:
        return None


class Queue:
    """Records every send; ``refuse(n, topic)`` makes the next ``n`` sends (to ``topic``, or any)
    fail as a broker that is down would (or with ``error``, e.g. a record too large). Queues
    given the same ``sent`` list stand for workers of one Kafka."""

    def __init__(self, sent: Optional[list] = None) -> None:
        self.sent: List[Tuple[str, str, Optional[bytes], dict]] = [] if sent is None else sent
        self.refusals: List[Tuple[Optional[str], Exception]] = []
        self.ack_refusals = 0
        self.acks_lost = 0
        self.lookups: List[list] = []
        self.lookups_refused = 0

    def refuse(self, n: int = 1, topic: Optional[str] = None, error: Optional[Exception] = None) -> None:
        self.refusals.extend([(topic, error or KafkaTimeoutError())] * n)

    def send(self, topic: str, key: str, value: Optional[bytes], headers: Any = None) -> None:
        if self.refusals and self.refusals[0][0] in (None, topic):
            error = self.refusals.pop(0)[1]
            raise QueueUnavailable("kafka: %s" % error.__class__.__name__) from error
        self.sent.append((topic, key, value, dict(headers or [])))

    def send_async(self, topic: str, key: str, value: Optional[bytes], headers: Any = None) -> Any:
        """Batch mode: refused at once as ``send`` is; otherwise sent when its ack is waited for,
        unless ``refuse_acks`` says that ack fails."""
        if self.refusals and self.refusals[0][0] in (None, topic):
            error = self.refusals.pop(0)[1]
            raise QueueUnavailable("kafka: %s" % error.__class__.__name__) from error
        return (topic, key, value, dict(headers or []))

    def refuse_acks(self, n: int = 1) -> None:
        self.ack_refusals += n

    def lose_acks(self, n: int = 1) -> None:
        """The next ``n`` batch sends are written, but their acks fail (a broker restart)."""
        self.acks_lost += n

    def wait(self, pending: Any, timeout: Any = None) -> None:
        if self.acks_lost:
            self.acks_lost -= 1
            self.sent.append(pending)
            raise QueueUnavailable("kafka: KafkaTimeoutError") from KafkaTimeoutError()
        if self.ack_refusals:
            self.ack_refusals -= 1
            raise QueueUnavailable("kafka: KafkaTimeoutError") from KafkaTimeoutError()
        self.sent.append(pending)

    def find_published(self, wanted: list) -> set:
        self.lookups.append(wanted)
        if self.lookups_refused:
            self.lookups_refused -= 1
            raise QueueUnavailable("kafka: KafkaTimeoutError") from KafkaTimeoutError()
        held = {(topic, key, headers.get(MESSAGE_ID, b"").decode()) for topic, key, _v, headers in self.sent}
        return {mid for topic, key, mid, _at in wanted if (topic, key, mid) in held}

    def on(self, topic: str) -> list:
        return [s for s in self.sent if s[0] == topic]


def handle(worker: Any, value: Optional[bytes], offset: int = 0, topic: str = "jobs", key: Optional[bytes] = None):
    record = Record(topic, 0, offset, value, key)
    worker.handle(TopicPartition(topic, 0), record)
    return record


def next_retry(worker: Any, offset: int) -> None:
    """Hand the worker the last retry message it published, as Kafka would once it is due."""
    _topic, _key, value, _headers = worker.queue.on("jobs.retry")[-1]
    due = json.loads(value)["not_before"]
    worker.clock = lambda: due
    handle(worker, value, offset, topic="jobs.retry")


def committed(worker: Any) -> List[int]:
    return [o for _t, _p, o in worker.consumer.commits]


def submit(engine: Any, user: int, job_type: str, args: dict) -> Tuple[str, bytes]:
    job = js.create_job(engine, user, job_type, args)
    return job["id"], encode_job(job["id"], job_type, args)


class KafkaDown:
    """The app's view of Kafka's state (app/kafkastate.py) when no broker answers, at once: the
    real one finds that out only when its bootstrap times out (3 s), in every test that renders
    the dashboard or scrapes /metrics. The real one is tested against a real broker."""

    def read(self) -> Dict[str, Any]:
        raise KafkaTimeoutError("Bootstrap failed (no broker answered)")

    def close(self) -> None:
        pass
