"""The producer side: a producer whose send failed is replaced, not reused."""
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import RecordMetadata

import app.jobqueue as jq


class FakeFuture:
    def __init__(self, error):
        self.error = error

    def get(self, timeout):
        if self.error:
            raise self.error
        return RecordMetadata("jobs", 0, None, 7, 0, None, 0, 0, 0)


class FakeProducer:
    made = []

    def __init__(self, *args, **kwargs):
        self.fail = len(FakeProducer.made) == 0  # the first producer is the broken one
        self.sent = []
        self.closed = None
        FakeProducer.made.append(self)

    def send(self, topic, key, value, headers):
        self.sent.append((topic, key))
        return FakeFuture(KafkaTimeoutError("expired") if self.fail else None)

    def close(self, timeout=None):
        self.closed = timeout


def test_failed_send_replaces_the_producer(monkeypatch):
    FakeProducer.made = []
    monkeypatch.setattr(jq, "make_producer", FakeProducer)
    queue = jq.JobQueue("127.0.0.1:1", "", timeout=1.0)
    try:
        queue.send("jobs", "a", b"{}")
        raise AssertionError("a failed send must raise QueueUnavailable")
    except jq.QueueUnavailable as exc:
        assert "KafkaTimeoutError" in str(exc)
    first = FakeProducer.made[0]
    assert first.closed == 0  # closed at once, not waited for
    assert queue.send("jobs", "b", b"{}") == ("jobs", 0, 7, 0)  # a fresh producer, which works; where it put it
    assert len(FakeProducer.made) == 2 and FakeProducer.made[1].sent == [("jobs", b"b")]
    queue.send("jobs", "c", b"{}")  # and is kept while it works
    assert len(FakeProducer.made) == 2


class ClosedProducer(FakeProducer):
    """What kafka-python 3.0 does when another request closed the shared producer meanwhile."""

    def send(self, topic, key, value, headers=None):
        raise RuntimeError("NetworkSelector closed!")


def test_a_producer_closed_under_a_request_is_a_503_not_a_500(monkeypatch):
    monkeypatch.setattr(jq, "make_producer", ClosedProducer)
    queue = jq.JobQueue("127.0.0.1:1", "", timeout=1.0)
    try:
        queue.send("jobs", "a", b"{}")
        raise AssertionError("must raise QueueUnavailable")
    except jq.QueueUnavailable as exc:
        assert "RuntimeError" in str(exc)
    assert queue.send_many("jobs", [("b", b"{}"), ("c", b"{}")]) == ["kafka: RuntimeError"] * 2


def test_record_checksums_use_the_c_module():
    # kafka-python falls back to pure-Python CRC-32C when the crc32c module cannot be imported;
    # that fallback cost ~10 % of a worker's CPU (pyproject.toml). Same answer, the C path taken.
    from kafka.record import util
    assert util.crc32c_c is not None
    data = b"joblab" * 100
    assert util.calc_crc32c(data) == util.crc32c_py(data)
