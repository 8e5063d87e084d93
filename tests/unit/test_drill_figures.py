"""The drill's arithmetic and partitioner mirror (the drill itself runs in `make drills`)."""
from kafka.partitioner.default import DefaultPartitioner

from tests.drills.client import job_for
from tests.support.figures import latency_summary, percentile
from tests.drills.kafka_side import partition_of


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0


def test_latency_summary_in_ms():
    s = latency_summary([0.2, 0.1, 0.3])
    assert s["count"] == 3 and s["p50"] == 200 and s["max"] == 300


class FourPartitions:
    """The part of kafka-python's ClusterMetadata the partitioner reads."""

    def topics(self):
        return {"jobs"}

    def partitions_for_topic(self, _topic):
        return {0, 1, 2, 3}

    available_partitions_for_topic = partitions_for_topic


def test_partition_of_matches_the_producer():
    for key in ["a", "3f2c1e9a-0000-4000-8000-000000000001", "drill"]:
        raw = key.encode()
        assert partition_of(key, 4) == DefaultPartitioner().partition("jobs", key, raw, None, None, FourPartitions())


def test_job_mix():
    import random

    kinds = [job_for(n, random.Random(1))[0] for n in range(1, 201)]
    assert kinds.count("fail") == 10 and kinds.count("sleep") == 30 and kinds.count("sum") == 160
