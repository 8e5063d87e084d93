"""Which messages Kafka holds already, by the message id the outbox gives each one.

The worker's outbox (app/store/outbox.py) publishes a row, then deletes it. A worker killed
between Kafka's acknowledgement and that delete leaves a row that looks unpublished, and one whose
acknowledgement was lost (a broker restart) may have been written all the same. Before such a row
goes out again, the publisher asks here: each message is looked for in the partition its key maps
to, from a little before it was written to the partition's end as of now. Only rows in doubt are
looked up (a takeover or a re-send), so the normal path never reads Kafka back."""
from __future__ import annotations

import os
import time
from typing import Dict, Iterable, List, Optional, Set, Tuple

from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

#: The header that carries a message's id (written into the outbox row with it).
MESSAGE_ID = "message-id"

#: How far before a row's write time its message is looked for: the writer and the broker
#: may stamp times from different clocks (machines of the lab).
CLOCK_SLACK_SECONDS = 60.0

#: How long one lookup may take in all. Longer than a send's timeout: a takeover reads up to a
#: lease (the longest job + 4 min) of the partition back, and a lookup that can never finish in
#: time would hold its rows (and the worker that owns them) for good.
LOOKUP_SECONDS = 60.0

#: (topic, key, message id, written at: epoch seconds)
Wanted = Tuple[str, str, str, float]


def partition_of(key: str, partitions: int) -> int:
    """Where a message keyed by ``key`` goes among ``partitions`` (kafka-python's default partitioner)."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def message_id(headers: Iterable[Tuple[str, bytes]]) -> Optional[str]:
    for name, value in headers or ():
        if name == MESSAGE_ID and value is not None:
            return value.decode("utf-8", "replace")
    return None


class Unknown(Exception):
    """Kafka could not say (unreachable, or slower than the timeout)."""


def find_published(bootstrap: str, wanted: List[Wanted], timeout: float,
                   reconnect_backoff_max_ms: int = 1000) -> Set[str]:
    """The ids among ``wanted`` that Kafka already holds. Raises Unknown when it cannot tell."""
    if not wanted:
        return set()
    deadline = time.monotonic() + timeout
    ms = int(timeout * 1000)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                 client_id="joblab-lookup-%d" % os.getpid(), request_timeout_ms=max(1000, ms),
                                 bootstrap_timeout_ms=ms, reconnect_backoff_max_ms=reconnect_backoff_max_ms)
    except Exception as exc:  # KafkaError mostly; whatever it is, the answer is "cannot tell"
        raise Unknown("kafka: %s" % exc.__class__.__name__) from exc
    try:
        return _scan(consumer, wanted, deadline)
    except Unknown:
        raise
    except Exception as exc:  # never mistaken for a job's own failure by the worker's handler
        raise Unknown("kafka: %s" % exc.__class__.__name__) from exc
    finally:
        try:
            consumer.close(autocommit=False)
        except Exception:  # closing a broken client: nothing more to learn
            pass


def _scan(consumer: KafkaConsumer, wanted: List[Wanted], deadline: float) -> Set[str]:
    since: Dict[TopicPartition, float] = {}
    ids: Dict[TopicPartition, Set[str]] = {}
    for topic, key, mid, written in wanted:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        if not parts:
            raise Unknown("no partitions known for %s" % topic)
        tp = TopicPartition(topic, parts[partition_of(key, len(parts))])
        since[tp] = min(since.get(tp, written), written)
        ids.setdefault(tp, set()).add(mid)
    ms_left = lambda: max(1, int((deadline - time.monotonic()) * 1000))  # noqa: E731
    ends = consumer.end_offsets(list(since), timeout_ms=ms_left())
    starts = consumer.offsets_for_times({tp: max(0, int((t - CLOCK_SLACK_SECONDS) * 1000)) for tp, t in since.items()},
                                        timeout_ms=ms_left())
    # A partition with nothing written since then holds none of them.
    todo = {tp: ends[tp] for tp, found in starts.items() if found is not None and found.offset < ends[tp]}
    found: Set[str] = set()
    if not todo:
        return found
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts[tp].offset)
    while todo:
        if time.monotonic() >= deadline:
            raise Unknown("kafka: reading back %d partitions took too long" % len(todo))
        for tp, records in consumer.poll(timeout_ms=min(500, ms_left())).items():
            for r in records:
                if r.offset < todo.get(tp, 0):
                    mid = message_id(r.headers)
                    if mid in ids[tp]:
                        found.add(mid)
        for tp in [tp for tp, end in todo.items() if consumer.position(tp) >= end or ids[tp] <= found]:
            del todo[tp]
            consumer.pause(tp)
    return found
