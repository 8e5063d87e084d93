"""The worker's Kafka consumer: its settings, the rebalance listener, and a kafka-python work-around."""
from __future__ import annotations

import logging
import os
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from app.config import DEFAULTS
from app.jobqueue import RECONNECT_BACKOFF_MAX_MS

from . import defaults

log = logging.getLogger("worker")


def consumer_config(settings: dict) -> dict:
    """The KafkaConsumer's settings (tested on their own: building a consumer needs a broker)."""
    return dict(
        bootstrap_servers=settings["KAFKA_BOOTSTRAP"].split(","),
        group_id=settings["KAFKA_GROUP"],
        client_id="joblab-worker-%d" % os.getpid(),
        enable_auto_commit=False,  # committed by hand, after the outcome is stored
        auto_offset_reset="earliest",  # a new group starts from the oldest unprocessed job
        max_poll_records=int(settings.get("WORKER_BATCH", DEFAULTS["WORKER_BATCH"])),
        max_poll_interval_ms=defaults.max_poll_interval_ms(
            float(settings.get("JOB_MAX_SECONDS", DEFAULTS["JOB_MAX_SECONDS"]))),
        session_timeout_ms=defaults.SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=defaults.HEARTBEAT_INTERVAL_MS,
        fetch_max_wait_ms=defaults.FETCH_MAX_WAIT_MS,
        request_timeout_ms=defaults.REQUEST_TIMEOUT_MS,
        allow_auto_create_topics=False,
        # kafka-python's own client metrics are read by nothing here (ours: app/metrics.py).
        metrics_enabled=False,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
    )


def make_consumer(settings: dict) -> KafkaConsumer:
    return KafkaConsumer(**consumer_config(settings))


class ForgetRevoked(ConsumerRebalanceListener):
    """What the worker holds about its partitions (pause timers, decisions not yet carried out,
    claims kept), forgotten for the partitions it no longer has.

    Not at revocation, though. kafka-python's default assignors rebalance eagerly: every
    rebalance revokes every partition (this listener is told so), and the partitions given back to
    the same member keep their kafka-python state - position and paused flag. A pause forgotten
    at revocation left such a partition paused with nothing to resume it: its retries never ran,
    its offset never moved, and the sweep, seeing their messages still waiting, never sent them
    again (6 jobs `queued` for good in a cluster drill, whose broker faults move the group's
    coordinator and so rebalance a group whose members all stay). So what the worker holds is
    reconciled with kafka-python's own state once the new assignment is applied
    (on_partitions_assigned): a pause timer is kept only for a partition still assigned AND still
    paused there. A member thrown out of the group (on_partitions_lost) loses every partition's
    state in kafka-python (positions, pauses): the worker forgets everything about them too."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("partitions revoked: %s", fmt_partitions(revoked))

    def on_partitions_lost(self, lost: Any) -> None:
        self._forget(set(lost))
        if lost:
            log.warning("partitions lost (this worker was dropped from the group): %s", fmt_partitions(lost))

    def on_partitions_assigned(self, assigned: Any) -> None:
        kept = set(assigned)
        paused = set(self.worker.consumer.paused())
        for tp in [tp for tp in self.worker.paused_until if tp not in kept or tp not in paused]:
            del self.worker.paused_until[tp]  # gone, or back with fresh state (not paused)
        held = {key[:2] for key in list(self.worker.decided) + list(self.worker.ahead)}
        self._forget(held - {(tp.topic, tp.partition) for tp in kept})
        log.info("partitions assigned: %s", fmt_partitions(assigned))

    def _forget(self, gone: Any) -> None:
        """Drop what the worker holds about the partitions ``gone`` (TopicPartitions or
        (topic, partition) pairs): their next owner handles their records from the committed
        offset (at-least-once)."""
        gone = {(tp[0], tp[1]) for tp in gone}
        for tp in [tp for tp in self.worker.paused_until if (tp.topic, tp.partition) in gone]:
            del self.worker.paused_until[tp]
        for key in [k for k in self.worker.decided if k[:2] in gone]:
            del self.worker.decided[key]
        for key in [k for k in self.worker.ahead if k[:2] in gone]:
            del self.worker.ahead[key]  # a claim kept (its release failed): the new owner's now


class FetchCoalescing:
    """Fetches that answer at once while the worker is idle, and wait a little for records to pile
    up while it is busy (defaults.COALESCE_*). kafka-python takes its fetch settings once, at
    construction; its fetcher reads them from its config each time it builds a fetch request, which
    is where they are switched here (kafka-python is pinned to 3.0.x; if that config is not found,
    the fetches keep the construction's settings: correct, only less batched)."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        config = getattr(getattr(consumer, "_fetcher", None), "config", None)
        known = isinstance(config, dict) and {"fetch_min_bytes", "fetch_max_wait_ms"} <= set(config)
        self.config = config if known else None
        self.busy = False

    def after_poll(self, records: int) -> None:
        """A poll brought ``records``: set how the next fetches wait. (The fetch in flight was built
        before; kafka-python sends the next one before a poll returns, so this applies a poll later.)"""
        busy = records >= defaults.COALESCE_AFTER
        if busy == self.busy or self.config is None:
            return
        self.busy = busy
        self.config["fetch_min_bytes"] = defaults.COALESCE_MIN_BYTES if busy else 1
        self.config["fetch_max_wait_ms"] = defaults.COALESCE_WAIT_MS if busy else defaults.FETCH_MAX_WAIT_MS


def drop_parked_records(consumer: KafkaConsumer, tp: TopicPartition) -> None:
    """Work around kafka-python 3.0.x: records already fetched for a partition when it is paused are
    parked and handed back after resume() only while the fetcher's in-line slot is None - which,
    after its first fetch, it never is again. The resumed partition is then never fetched again
    (retries stuck for good; found by `make drills`). We always seek() before pausing, so parked
    records are behind our position and would be discarded anyway: drop them so the partition is
    fetched afresh from the position we set."""
    fetcher = getattr(consumer, "_fetcher", None)
    for name in ("_paused_partition_records", "_paused_completed_fetches"):
        parked = getattr(fetcher, name, None)
        if isinstance(parked, dict):
            stale = parked.pop(tp, None)
            if stale is not None and hasattr(stale, "drain"):
                stale.drain()


def finish_stalled_rejoin(consumer: KafkaConsumer) -> bool:
    """Work around kafka-python 3.0.x: a rejoin started because the group's metadata changed (the
    leader assigned while it knew no partitions of a topic, or partitions were added) is driven only
    while need_rejoin() says so - and that turns false as soon as the JoinGroup is answered. If the
    JoinGroup/SyncGroup round trip outlives the poll that started it, no later poll finishes it: the
    member stays "rebalancing" with no partitions for good (the broker thinks it owns them; found by
    `make drills`: a worker restarted after a SIGKILL sat idle for 9 minutes). Asking for a rejoin
    in that state makes the next poll drive the join to the end. True if it was needed."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not getattr(coordinator, "rejoining", False):
        return False
    if not coordinator.rebalance_in_progress() or coordinator.need_rejoin():
        return False
    coordinator.request_rejoin()
    return True


def fmt_partitions(tps: Any) -> str:
    return ", ".join(sorted("%s[%d]" % (tp.topic, tp.partition) for tp in tps)) or "none"
