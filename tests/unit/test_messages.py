import json

import pytest

from app.messages import PoisonMessage, decode_job, encode_event, encode_job


def test_round_trip():
    msg = decode_job(encode_job("j1", "sum", {"numbers": [1]}, attempt=2, not_before=5.0))
    assert (msg["job_id"], msg["type"], msg["args"], msg["attempt"], msg["not_before"]) == (
        "j1", "sum", {"numbers": [1]}, 2, 5.0)


@pytest.mark.parametrize("raw, why", [
    (None, "empty"),
    (b"\xff\xfe", "undecodable"),
    (b"{not json", "undecodable"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"type": "sum", "args": {}, "attempt": 1}).encode(), "job_id"),
    (json.dumps({"job_id": "x", "type": "sum", "args": [], "attempt": 1}).encode(), "args"),
    (json.dumps({"job_id": "x", "type": "sum", "args": {}, "attempt": 1, "not_before": "soon"}).encode(),
     "not_before"),
])
def test_poison_is_named(raw, why):
    with pytest.raises(PoisonMessage, match=why):
        decode_job(raw)


def test_event_carries_status():
    assert json.loads(encode_event("j1", "failed", error="x"))["status"] == "failed"
