"""The drill's direct dealings with Kafka: writing poison into the jobs topic, reading the
dead-letter topic back."""
from __future__ import annotations

import time
import uuid
from typing import Dict, List, Optional, Tuple

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition


def write_poison(bootstrap: str, topic: str, partitions: int) -> List[bytes]:
    """One undecodable record (not UTF-8, not JSON) on every partition of ``topic``; returns them."""
    marker = uuid.uuid4().hex
    values = [b"\xff\xfe drill poison %s/%d \x00" % (marker.encode(), p) for p in range(partitions)]
    write_records(bootstrap, topic, [(b"drill-poison", value, p) for p, value in enumerate(values)])
    return values


def write_records(bootstrap: str, topic: str, records: List[Tuple[bytes, bytes, Optional[int]]]) -> None:
    """Write (key, value, partition or None) records as they are, each acknowledged by the broker."""
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=0)
    try:
        for key, value, partition in records:
            producer.send(topic, key=key, value=value, partition=partition).get(timeout=30)
    finally:
        producer.close(timeout=10)


def read_all(bootstrap: str, topic: str, seconds: float = 60) -> List[Tuple[bytes, bytes, Dict[str, bytes]]]:
    """(key, value, headers) of every record now in ``topic``; bounded by ``seconds``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            raise RuntimeError("topic %s does not exist" % topic)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out = []
        deadline = time.monotonic() + seconds
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise RuntimeError("reading %s took longer than %.0f s" % (topic, seconds))
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.key or b"", r.value or b"", dict(r.headers or [])) for r in records)
        return out
    finally:
        consumer.close(autocommit=False)
