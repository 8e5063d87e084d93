"""The Kafka side of the app: a lazily created producer (one per process, after gunicorn forks)
and a readiness probe. The worker uses the same producer class for retries and events."""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any, List, Optional, Set, Tuple

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from . import published
from .topics import Topics

log = logging.getLogger(__name__)


class QueueUnavailable(Exception):
    """Kafka did not acknowledge in time (or could not be reached)."""


#: Longest wait between reconnection attempts to a broker that went away. kafka-python's default
#: (30 s, reached by doubling) kept clients away for up to half a minute after a broker restart had
#: finished; 1 s brings them back within a second of it (measured by `make drills`).
RECONNECT_BACKOFF_MAX_MS = 1000

#: What a send may raise when Kafka does not take a message. RuntimeError too: requests share one
#: producer per process, and when one request's failure replaces it (``_discard``), another one
#: still using the closed producer gets kafka-python's "NetworkSelector closed!" (seen in the
#: cluster drills, a broker cut off the network: it was a 500).
SEND_ERRORS = (KafkaError, RuntimeError)


def make_producer(bootstrap: str, timeout: float, linger_ms: float = 0) -> KafkaProducer:
    """acks=all + idempotence: an acknowledged job is on every in-sync replica, written once."""
    ms = int(timeout * 1000)
    return KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        client_id="joblab-%d" % os.getpid(),
        acks="all",
        enable_idempotence=True,
        # How long a record waits for others to share its request (JOBLAB_KAFKA_LINGER_MS):
        # each submit waits for its own ack, so this is latency added to every one of them.
        linger_ms=linger_ms,
        bootstrap_timeout_ms=ms,
        max_block_ms=ms,
        request_timeout_ms=max(1000, ms // 2),
        delivery_timeout_ms=ms,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        # kafka-python's own client metrics (sensors updated on every send and response) are
        # read by nothing here (ours are in app/metrics.py); they cost ~4 % of a submit's CPU.
        metrics_enabled=False,
        # One request in flight per broker: what is sent while one is in flight waits for its
        # answer and goes out with every other record sent meanwhile, in ONE request (group commit).
        # An idle producer sends at once, as with linger 0; under load, concurrent submits of a
        # gevent worker share requests. A single-record produce costs the broker ~0.9 ms of CPU
        # and kafka-python ~1.1 ms here; in a batch of 100, ~0.13 ms both together (make bench:
        # single submits +20 %, Kafka's CPU per job -25 %). While that request is out, kafka-python
        # 3.0's sender polls with no timeout (it finds the broker "not ready" with no backoff):
        # making it wait instead, up to 20 ms, cost a fifth of the throughput (the answer did not
        # end the wait), 1 ms changed nothing; it is left as kafka-python has it.
        max_in_flight_requests_per_connection=1,
    )


class JobQueue:
    """Produces to Kafka and waits for the acknowledgement; ``init_app`` attaches it to Flask."""

    def __init__(self, bootstrap: Optional[str] = None, prefix: str = "", timeout: float = 10.0,
                 linger_ms: float = 0) -> None:
        self.bootstrap = bootstrap
        self.topics = Topics.with_prefix(prefix)
        self.timeout = timeout
        self.linger_ms = linger_ms
        self._producer: Optional[KafkaProducer] = None
        self._admin: Optional[KafkaAdminClient] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def init_app(self, app: Any) -> None:
        self.bootstrap = app.config["KAFKA_BOOTSTRAP"]
        self.topics = Topics.with_prefix(app.config["KAFKA_TOPIC_PREFIX"])
        self.timeout = float(app.config["KAFKA_SEND_TIMEOUT"])
        self.linger_ms = float(app.config["KAFKA_LINGER_MS"])
        app.extensions["joblab_queue"] = self

    def _forget_if_forked(self) -> None:
        """After fork the parent's clients (sockets, threads) are not ours: start afresh."""
        if self._pid != os.getpid():
            self._producer = self._admin = None
            self._pid = os.getpid()

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            self._forget_if_forked()
            if self._producer is None:
                try:
                    self._producer = make_producer(self.bootstrap or "", self.timeout, self.linger_ms)
                except KafkaError as exc:
                    raise QueueUnavailable("kafka: %s" % exc.__class__.__name__) from exc
            return self._producer

    def send(self, topic: str, key: str, value: Optional[bytes],
             headers: Optional[List[Tuple[str, bytes]]] = None) -> Tuple[str, int, int, int]:
        """Produce and block until acknowledged (then: where the message is, as (topic,
        partition, offset, its timestamp in epoch ms)), or raise QueueUnavailable."""
        producer = self._get_producer()
        try:
            future = producer.send(topic, key=key.encode("utf-8"), value=value, headers=headers or None)
            meta = future.get(timeout=self.timeout + 1)
            return meta.topic, meta.partition, meta.offset, meta.timestamp
        except SEND_ERRORS as exc:
            self._discard(producer)
            raise QueueUnavailable("kafka: %s" % (exc.__class__.__name__,)) from exc

    def send_async(self, topic: str, key: str, value: Optional[bytes],
                   headers: Optional[List[Tuple[str, bytes]]] = None) -> Any:
        """Produce without waiting; hand what this returns to ``wait``. The worker sends a batch's
        messages this way and waits for all their acks once (the producer batches them)."""
        producer = self._get_producer()
        try:
            return producer, producer.send(topic, key=key.encode("utf-8"), value=value, headers=headers or None)
        except SEND_ERRORS as exc:
            self._discard(producer)
            raise QueueUnavailable("kafka: %s" % (exc.__class__.__name__,)) from exc

    def wait(self, pending: Any, timeout: Optional[float] = None) -> None:
        """Block until a ``send_async`` is acknowledged (at most ``timeout`` seconds, by default the
        send timeout + 1 s), or raise QueueUnavailable."""
        producer, future = pending
        try:
            future.get(timeout=self.timeout + 1 if timeout is None else max(0.0, timeout))
        except SEND_ERRORS as exc:
            self._discard(producer)
            raise QueueUnavailable("kafka: %s" % (exc.__class__.__name__,)) from exc

    def send_many(self, topic: str, items: List[Tuple[str, bytes]]) -> List[Optional[str]]:
        """Produce every (key, value) without waiting in between, then wait for all the acks
        (one flush): per item, None once acknowledged, else why not. A bulk submit's messages
        share the producer's batches instead of one round trip each."""
        try:
            producer = self._get_producer()
        except QueueUnavailable as exc:
            return [str(exc)] * len(items)
        futures: List[Any] = []
        for key, value in items:
            try:
                futures.append(producer.send(topic, key=key.encode("utf-8"), value=value))
            except SEND_ERRORS as exc:
                futures.append(exc)
        outcome: List[Optional[str]] = []
        failed = False
        for f in futures:
            try:
                if isinstance(f, SEND_ERRORS):
                    raise f
                f.get(timeout=self.timeout + 1)
                outcome.append(None)
            except SEND_ERRORS as exc:
                failed = True
                outcome.append("kafka: %s" % exc.__class__.__name__)
        if failed:
            self._discard(producer)
        return outcome

    def find_published(self, wanted: List[published.Wanted]) -> Set[str]:
        """Which of ``wanted`` Kafka holds already (app/published.py), or QueueUnavailable."""
        # A broker that is down is found by the (bounded, cleaned-up) readiness probe first: a
        # consumer whose constructor fails to reach it leaves its I/O thread and sockets behind.
        self.ping()
        try:
            return published.find_published(self.bootstrap or "", wanted, max(self.timeout, published.LOOKUP_SECONDS),
                                             RECONNECT_BACKOFF_MAX_MS)
        except published.Unknown as exc:
            raise QueueUnavailable(str(exc)) from exc

    def _discard(self, producer: KafkaProducer) -> None:
        """Replace a producer whose send failed. Seen in the fault drills: after a broker restart
        expired its in-flight batch, kafka-python 3.0's idempotent producer timed out every later
        send although the broker was back. A fresh producer costs a few milliseconds once."""
        with self._lock:
            if self._producer is not producer:
                return  # another request replaced it already
            self._producer = None
        try:
            producer.close(timeout=0)  # its unsent records were already answered 503 (or retried)
        except Exception as exc:  # closing a broken client must not turn a 503 into a 500
            log.warning("closing the failed Kafka producer: %s", exc.__class__.__name__)

    def ping(self, timeout: float = 3.0) -> None:
        """Raise QueueUnavailable unless a broker answers a metadata request now."""
        ms = int(timeout * 1000)
        with self._lock:
            self._forget_if_forked()
            try:
                if self._admin is None:
                    self._admin = KafkaAdminClient(
                        bootstrap_servers=(self.bootstrap or "").split(","),
                        client_id="joblab-ready",
                        bootstrap_timeout_ms=ms,
                        request_timeout_ms=ms,
                        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                    )
                self._admin.describe_cluster()
            except Exception as exc:  # kafka-python raises KafkaError subclasses, and socket errors
                admin, self._admin = self._admin, None
                if admin is not None:
                    try:
                        admin.close()
                    except Exception:
                        pass
                raise QueueUnavailable("kafka: %s" % (exc.__class__.__name__,)) from exc

    def close(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            producer, self._producer = self._producer, None
            admin, self._admin = self._admin, None
        if producer is not None:
            producer.close(timeout=5)
        if admin is not None:
            admin.close()
