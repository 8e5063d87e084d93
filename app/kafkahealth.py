"""What Kafka says about its own health: the brokers it has, the controller, and per partition of
every topic (Kafka's own included) whether it has a leader and all its replicas in sync.
`flask kafka health` prints it (fab status and the cluster drills read that line)."""
from __future__ import annotations

from typing import Any, Dict, List

from kafka import KafkaAdminClient

from .jobqueue import RECONNECT_BACKOFF_MAX_MS


def admin_client(bootstrap: str, timeout_ms: int = 5000) -> KafkaAdminClient:
    """One admin client for the questions below (close it after)."""
    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="joblab-health",
                            bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms,
                            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)


def replication_health(admin: KafkaAdminClient) -> Dict[str, Any]:
    """brokers (ids), controller, partitions, under_replicated (fewer in sync than replicas),
    offline (no leader), the under-replicated ones named topic/partition (at most 20), and the
    fewest replicas any partition has."""
    cluster = admin.describe_cluster()
    described = admin.describe_topics()
    partitions = under = offline = 0
    fewest = None
    named = []
    for topic in described:
        for p in topic.get("partitions") or []:
            partitions += 1
            replicas = len(p.get("replica_nodes") or [])
            fewest = replicas if fewest is None else min(fewest, replicas)
            if p.get("leader_id", -1) < 0:
                offline += 1
            if len(p.get("isr_nodes") or []) < replicas:
                under += 1
                if len(named) < 20:
                    named.append("%s/%d isr=%s" % (topic["name"], p["partition_index"], sorted(p.get("isr_nodes") or [])))
    return {"brokers": sorted(b["broker_id"] for b in cluster.get("brokers") or []),
            "controller": cluster.get("controller_id"), "partitions": partitions,
            "under_replicated": under, "offline": offline, "under_replicated_partitions": named,
            "fewest_replicas": fewest}


def leaders(admin: KafkaAdminClient, topics: List[str]) -> Dict[int, int]:
    """How many partitions of ``topics`` each broker leads: {broker id: count}."""
    counts: Dict[int, int] = {}
    for topic in admin.describe_topics(topics):
        for p in topic.get("partitions") or []:
            if p.get("leader_id", -1) >= 0:
                counts[p["leader_id"]] = counts.get(p["leader_id"], 0) + 1
    return counts


def group_members(admin: KafkaAdminClient, group: str) -> int:
    """Members of consumer group ``group`` now (0 when it has none or is rebalancing)."""
    described = admin.describe_groups([group]).get(group) or {}
    return len(described.get("members") or [])
