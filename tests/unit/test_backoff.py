from marshmallow.validate import Range

from app.jobtypes import REGISTRY
from worker.consumer import consumer_config
from worker.defaults import BATCH_SECONDS, SESSION_TIMEOUT_MS, backoff_seconds


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(a, 0.5, 3.0) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def longest_job_accepted() -> float:
    """What the API lets a client ask for: the `sleep` type's bound, read from its schema."""
    field = REGISTRY["sleep"].schema._declared_fields["seconds"]
    return max(v.max for v in field.validators if isinstance(v, Range))


def test_the_consumer_outlasts_the_longest_job_the_api_accepts():
    # Otherwise a worker running the longest job would be evicted from the group mid-job (a
    # rebalance, and the job run twice). Read from the schema and the consumer's real settings:
    # raising the schema's bound without the worker's poll interval fails here.
    # A batch takes no new record after BATCH_SECONDS, and its last one may be the longest job.
    config = consumer_config({"KAFKA_BOOTSTRAP": "127.0.0.1:1", "KAFKA_GROUP": "g", "WORKER_BATCH": 7})
    assert config["max_poll_interval_ms"] >= (longest_job_accepted() * 2 + BATCH_SECONDS) * 1000
    assert config["enable_auto_commit"] is False and config["max_poll_records"] == 7
    assert config["session_timeout_ms"] == SESSION_TIMEOUT_MS > 3 * config["heartbeat_interval_ms"]
