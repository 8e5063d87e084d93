"""The worker's fetches answer at once while it is idle and wait for records to pile up while it is
busy (worker/consumer.py FetchCoalescing), switched in kafka-python's fetcher config."""
from types import SimpleNamespace

from kafka import KafkaConsumer

from worker import defaults
from worker.consumer import FetchCoalescing, consumer_config


def _consumer():
    config = {"fetch_min_bytes": 1, "fetch_max_wait_ms": defaults.FETCH_MAX_WAIT_MS, "other": 7}
    return SimpleNamespace(_fetcher=SimpleNamespace(config=config)), config


def test_busy_polls_make_fetches_wait_and_a_quiet_poll_turns_that_off():
    consumer, config = _consumer()
    coalescing = FetchCoalescing(consumer)
    coalescing.after_poll(1)
    assert (config["fetch_min_bytes"], config["fetch_max_wait_ms"]) == (1, defaults.FETCH_MAX_WAIT_MS)
    coalescing.after_poll(defaults.COALESCE_AFTER)
    assert (config["fetch_min_bytes"], config["fetch_max_wait_ms"]) == (defaults.COALESCE_MIN_BYTES,
                                                                          defaults.COALESCE_WAIT_MS)
    coalescing.after_poll(50)
    assert config["fetch_min_bytes"] == defaults.COALESCE_MIN_BYTES
    coalescing.after_poll(0)
    assert (config["fetch_min_bytes"], config["fetch_max_wait_ms"]) == (1, defaults.FETCH_MAX_WAIT_MS)
    assert config["other"] == 7


def test_the_idle_settings_are_the_consumers_own():
    # What an idle worker's fetches use is what the consumer is built with.
    cfg = consumer_config({"KAFKA_BOOTSTRAP": "127.0.0.1:1", "KAFKA_GROUP": "g"})
    assert cfg["fetch_max_wait_ms"] == defaults.FETCH_MAX_WAIT_MS
    assert cfg.get("fetch_min_bytes", 1) == 1
    # The coalescing wait stays below the idle one (it is what busy fetches add at most).
    assert defaults.COALESCE_WAIT_MS < defaults.FETCH_MAX_WAIT_MS


def test_a_consumer_without_that_config_keeps_its_own_settings():
    coalescing = FetchCoalescing(SimpleNamespace())
    coalescing.after_poll(100)  # nothing to switch; no error
    assert coalescing.config is None


def test_the_pinned_kafka_python_reads_those_settings_from_its_fetcher_config():
    # The switch relies on kafka-python building each fetch request from its fetcher's config dict.
    consumer = KafkaConsumer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 8), fetch_max_wait_ms=100)
    try:
        coalescing = FetchCoalescing(consumer)
        assert coalescing.config is consumer._fetcher.config
        assert coalescing.config["fetch_max_wait_ms"] == 100
    finally:
        consumer.close()
