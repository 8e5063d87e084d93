"""What Kafka says about the job workers: consumer lag per partition (end offset - the group's
committed offset) of the topics they consume, and the members of their group. One admin client
and one group-less consumer per process, made on first use and replaced after a failure; every
call bounded by the request timeout."""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from .jobqueue import RECONNECT_BACKOFF_MAX_MS

log = logging.getLogger(__name__)

#: Longest a question to Kafka may take (ms).
REQUEST_TIMEOUT_MS = 3000


class KafkaState:
    def __init__(self, bootstrap: str, group: str, topics: List[str]) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self._admin: Optional[KafkaAdminClient] = None
        self._consumer: Optional[KafkaConsumer] = None
        self._lock = threading.Lock()

    def _clients(self) -> Tuple[KafkaAdminClient, KafkaConsumer]:
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","), client_id="joblab-window",
                                           bootstrap_timeout_ms=REQUEST_TIMEOUT_MS,
                                           request_timeout_ms=REQUEST_TIMEOUT_MS,
                                           reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)
            # A broker that is down is found here, quickly: a consumer made against it would
            # wait for it far longer (and leave its I/O thread behind).
            self._admin.describe_cluster()
        if self._consumer is None:
            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap.split(","), client_id="joblab-window",
                                           group_id=None, enable_auto_commit=False,
                                           bootstrap_timeout_ms=REQUEST_TIMEOUT_MS,
                                           request_timeout_ms=REQUEST_TIMEOUT_MS + 1000,
                                           reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)
        return self._admin, self._consumer

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            try:
                if client is not None:
                    client.close()
            except Exception as exc:  # closing a broken client: nothing left to do
                log.debug("closing a Kafka client: %s", exc)
        self._admin = self._consumer = None

    def read(self) -> Dict[str, Any]:
        """{"lag": {(topic, partition): messages}, "members": [{"client_id", "host"}...]}, or
        raises (Kafka down): then the clients are dropped and made afresh next time."""
        with self._lock:
            try:
                return self._read()
            except Exception:
                self.close()
                raise

    def _read(self) -> Dict[str, Any]:
        admin, consumer = self._clients()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps) if tps else {}
        starts = consumer.beginning_offsets(tps) if tps else {}
        committed = admin.list_group_offsets({self.group: tps}).get(self.group, {}) if tps else {}
        lag = {}
        for tp in tps:
            done = committed.get(tp)
            offset = done.offset if done is not None and done.offset is not None and done.offset >= 0 else starts[tp]
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - offset)
        members: List[Dict[str, str]] = []
        group = admin.describe_groups([self.group]).get(self.group) or {}
        for member in group.get("members") or []:
            members.append({"client_id": str(member.get("client_id", "")), "host": str(member.get("client_host", ""))})
        return {"lag": lag, "members": members}
