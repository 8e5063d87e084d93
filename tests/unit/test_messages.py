import json

import pytest

from app.messages import (NOT_BEFORE_SLACK_SECONDS, RESULT_MAX_BYTES, PoisonMessage, ResultInvalid, decode_job,
                          encode_event, encode_job, encode_result)


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


# -- hostile payloads: each is a named PoisonMessage, never another exception ------------------
def _msg(**fields):
    body = {"v": 1, "job_id": "0b6f3c1e-5d2a-4c1b-9a51-3f1f7c2d9e10", "type": "sum", "args": {}, "attempt": 1}
    body.update(fields)
    return body


@pytest.mark.parametrize("raw, why", [
    (b'{"job_id": "x", "type": "sum", "args": {}, "attempt": 1, "not_before": Infinity}', "Infinity is not valid"),
    (b'{"job_id": "x", "type": "sum", "args": {}, "attempt": 1, "not_before": NaN}', "NaN is not valid"),
    (b"[" * 50000 + b"]" * 50000, "nested too deeply"),
    (b'{"job_id": "x", "type": "sum", "args": {"numbers": [%s]}, "attempt": 1}' % (b"9" * 5000), "digits"),
    (json.dumps(_msg(job_id="x\n2026-11-28 INFO worker: forged")).encode(), "job_id"),
    (json.dumps(_msg(job_id="x" * 37)).encode(), "job_id"),
    (json.dumps(_msg(type="t" * 65)).encode(), "type"),
    (json.dumps(_msg(attempt=True)).encode(), "attempt"),
    (json.dumps(_msg(attempt=0)).encode(), "attempt"),
    (json.dumps(_msg(attempt=10 ** 9)).encode(), "attempt"),
    (json.dumps(_msg(not_before=True)).encode(), "not_before"),
])
def test_hostile_payload_is_named_poison(raw, why):
    with pytest.raises(PoisonMessage, match=why):
        decode_job(raw)


def test_poison_names_the_job_when_it_can():
    with pytest.raises(PoisonMessage) as info:
        decode_job(json.dumps(_msg(attempt="2")).encode())
    assert info.value.job_id == _msg()["job_id"]
    with pytest.raises(PoisonMessage) as info:
        decode_job(b"{broken")
    assert info.value.job_id is None


def test_not_before_bounded_by_the_longest_backoff():
    now = 1_000_000.0
    due_soon = json.dumps(_msg(not_before=now + 30)).encode()
    assert decode_job(due_soon, max_delay=30.0, now=now)["not_before"] == now + 30
    # Clock skew between workers is allowed for; a retry a day ahead is not a retry.
    skewed = json.dumps(_msg(not_before=now + 30 + NOT_BEFORE_SLACK_SECONDS - 1)).encode()
    assert decode_job(skewed, max_delay=30.0, now=now)
    far = json.dumps(_msg(not_before=now + 86400)).encode()
    with pytest.raises(PoisonMessage, match="86400 s ahead; retries wait at most 30 s"):
        decode_job(far, max_delay=30.0, now=now)
    assert decode_job(far)["not_before"] == now + 86400  # no bound asked for


# -- results: strict JSON or a named error ----------------------------------------------------
@pytest.mark.parametrize("result, why", [
    ({"sum": float("nan")}, "Out of range float"),
    ({"sum": float("inf")}, "Out of range float"),
    ({"sum": 10 ** 5000}, "ValueError"),
    ({"when": object()}, "not JSON serializable"),
    ({"big": "x" * (RESULT_MAX_BYTES + 1)}, "at most"),
])
def test_unserialisable_result_is_named(result, why):
    with pytest.raises(ResultInvalid, match=why):
        encode_result(result)


def test_result_and_event_carry_the_same_json():
    text = encode_result({"sum": 3, "of": [1, 2]})
    event = json.loads(encode_event("j1", "succeeded", result_json=text))
    assert event["result"] == {"sum": 3, "of": [1, 2]} and event["status"] == "succeeded"
