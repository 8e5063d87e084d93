"""Hostile request bodies: each is a 400 JSON error naming the problem, nothing is stored, and the
process never sees a RecursionError, an int-to-str limit or a NaN."""
import pytest

from app.api.jsonbody import nesting_depth
from app.api.schemas import JobCreateSchema
from app.store import jobs as js
from tests.unit.test_api import assert_error, engine, user_id


def post_raw(client, headers, body: bytes):
    return client.post("/v1/jobs", data=body, content_type="application/json", headers=headers)


@pytest.mark.parametrize("text, depth", [
    (b"1", 0), (b"[]", 1), (b'{"a": [1, {"b": []}]}', 4),
    (b'{"a": "[[[[{{{{"}', 1),            # brackets inside strings are text
    (b'["\\"[[[", []]', 2),               # ... escaped quotes included
    (b"[" * 5000, 5000),                  # unbalanced: scanned all the same
])
def test_nesting_depth(text, depth):
    assert nesting_depth(text) == depth


@pytest.mark.parametrize("levels", [33, 5000, 30000])
def test_deep_nesting_is_400_before_parsing(client, alice, levels):
    args = b"[" * levels + b"]" * levels
    body = assert_error(post_raw(client, alice, b'{"type": "sum", "args": {"numbers": %s}}' % args), 400, "body")
    assert "at most 32" in body["message"]


def test_nesting_within_the_bound_reaches_validation(client, alice):
    args = b"[" * 28 + b"]" * 28
    assert_error(post_raw(client, alice, b'{"type": "sum", "args": {"numbers": %s}}' % args), 400,
                 "args.numbers.0")


@pytest.mark.parametrize("raw, why", [
    # The report: accepted (202), then the worker died serialising the sum.
    (b'{"type": "sum", "args": {"numbers": [%s, %s]}}' % (b"9" * 4300, b"9" * 4300), "digits"),
    (b'{"type": "sum", "args": {"numbers": [%s]}}' % (b"9" * 50000), "digits"),
    (b'{"type": "sum", "args": {"numbers": [NaN]}}', "NaN"),
    (b'{"type": "sum", "args": {"numbers": [Infinity, 1]}}', "Infinity"),
    (b'{"type": "sleep", "args": {"seconds": -Infinity}}', "Infinity"),
    (b'{"type": "sum", "args": {"numbers": [1]}}\xff', "invalid JSON"),
    (b'\xff\xfe{"type": "sum"}', "invalid JSON"),
])
def test_non_json_numbers_and_bytes_are_400(client, app, alice, raw, why):
    body = assert_error(post_raw(client, alice, raw), 400, "body")
    assert why in body["message"]
    assert js.list_jobs(engine(app), user_id(app, alice), limit=10)[0] == []


@pytest.mark.parametrize("numbers, field", [
    ("[1e308, 1e308]", "args.numbers.0"),       # each finite; their sum is not
    ("[1, 1e400]", "args.numbers.1"),           # parses to inf
    ("[9007199254740993]", "args.numbers.0"),   # 2**53 + 1
])
def test_numbers_out_of_bounds_are_400(client, alice, numbers, field):
    raw = b'{"type": "sum", "args": {"numbers": %s}}' % numbers.encode()
    assert_error(post_raw(client, alice, raw), 400, field)


def test_fail_message_with_line_breaks_is_valid_data():
    # Stored and returned as data; the logs quote it (test_logsetup.py).
    msg = "boom\n2026-11-28 10:00:00,000 INFO worker[1]: job x: running -> succeeded"
    assert JobCreateSchema().validate({"type": "fail", "args": {"message": msg}}) == {}


@pytest.mark.parametrize("body", [
    b'"' + b'\\"' * 32000,       # an unterminated string of escaped quotes: 18 s with the old pattern
    b'"' + b'\\\\' * 32000,
    b'[' * 60000,
    b'"[' * 30000,
])
def test_nesting_scan_is_linear_on_hostile_bodies(body):
    # One pass over the body: a 64 KiB body takes milliseconds. A generous bound, far below the
    # quadratic scan's 18 s, so that a loaded machine cannot make this flaky.
    import time

    started = time.perf_counter()
    nesting_depth(body)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("text, depth", [
    (b'["\\\\", [1]]', 2),          # an escaped backslash does not escape the closing quote
    (b'["\\\\\\"[", [1]]', 2),      # ... nor does the escaped quote after it end the string
    (b'{"a\\u005b": [1]}', 2),
])
def test_nesting_depth_escapes(text, depth):
    assert nesting_depth(text) == depth
