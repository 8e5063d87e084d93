"""The job message on the wire: JSON, keyed by job id so a job's messages share a partition.

Whatever arrives on a topic is untrusted: decode_job checks every field as strictly as the API
checks a request (no NaN/Infinity, bounded sizes and depth, a sane retry time), and results are
serialised as strict JSON before anything is stored."""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Dict, Optional

VERSION = 1

#: Job ids are the API's UUIDs; anything else in a message (line breaks, 10 kB) is refused.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,36}")
#: Longest job type name (the store's column).
TYPE_MAX = 64
#: Highest attempt number a message may carry (MAX_ATTEMPTS is far below).
ATTEMPT_MAX = 1000
#: How far beyond the longest retry backoff a retry's not_before may lie (clock skew between
#: workers); later than that is absurd, and would stall the partition until then.
NOT_BEFORE_SLACK_SECONDS = 300.0
#: Largest serialised result stored and published (Kafka's default record limit is 1 MB; a bigger
#: event could never be sent, and the partition would stall retrying it).
RESULT_MAX_BYTES = 256 * 1024


class PoisonMessage(ValueError):
    """A payload that can never be processed (not JSON, wrong shape): dead-letter it, don't stall.
    ``job_id`` is set when the payload named a job (that job is failed, not left queued)."""

    def __init__(self, reason: str, job_id: Optional[str] = None) -> None:
        super().__init__(reason)
        self.job_id = job_id


class ResultInvalid(ValueError):
    """A job's return value that is not strict JSON (NaN, Infinity, an object), or too large."""


#: Longest integer literal accepted in JSON: no job argument needs more (sums are bounded by
#: 2**53, 16 digits), and Python's int() is quadratic in the digits.
INT_DIGITS_MAX = 30


def _no_constants(name: str) -> Any:
    raise ValueError("%s is not valid JSON" % name)


def _bounded_int(literal: str) -> int:
    if len(literal) > INT_DIGITS_MAX:
        raise ValueError("integer literal of %d digits (at most %d)" % (len(literal), INT_DIGITS_MAX))
    return int(literal)


# Built once: json.loads(text, **options) would build a decoder on every call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_int=_bounded_int)


def strict_loads(text: str) -> Any:
    """json.loads without Python's NaN/Infinity extension, with bounded integer literals
    (RecursionError becomes ValueError)."""
    try:
        return _STRICT_DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def encode_result(result: Any) -> str:
    """The result as strict JSON text, or ResultInvalid naming what is wrong with it."""
    try:
        text = json.dumps(result, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        # ValueError covers NaN/Infinity and ints beyond Python's int-to-str digit limit.
        raise ResultInvalid("result is not valid JSON: %s: %s" % (exc.__class__.__name__, str(exc)[:200])) from None
    if len(text) > RESULT_MAX_BYTES:
        raise ResultInvalid("result is %d bytes; at most %d are kept" % (len(text), RESULT_MAX_BYTES))
    return text


def encode_job(
    job_id: str, job_type: str, args: Dict[str, Any], attempt: int = 1, not_before: Optional[float] = None
) -> bytes:
    return json.dumps(
        {
            "v": VERSION,
            "job_id": job_id,
            "type": job_type,
            "args": args,
            "attempt": attempt,
            # Epoch seconds before which a retry must not run (None: run at once).
            "not_before": not_before,
            "sent_at": time.time(),
        },
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")


def decode_job(value: Optional[bytes], max_delay: Optional[float] = None, now: Optional[float] = None) -> Dict[str, Any]:
    """The message as a dict, or PoisonMessage naming what is wrong with it. With ``max_delay``
    (the longest retry backoff), a not_before later than ``now`` + max_delay + slack is refused."""
    if value is None:
        raise PoisonMessage("empty message")
    try:
        msg = strict_loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage("undecodable payload: %s" % str(exc)[:200]) from None
    if not isinstance(msg, dict):
        raise PoisonMessage("payload is not a JSON object")
    job_id = msg.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise PoisonMessage("field 'job_id' missing or not a job id")
    for key, kind in (("type", str), ("args", dict), ("attempt", int)):
        if not isinstance(msg.get(key), kind) or isinstance(msg.get(key), bool):
            raise PoisonMessage("field %r missing or not %s" % (key, kind.__name__), job_id)
    if len(msg["type"]) > TYPE_MAX:
        raise PoisonMessage("field 'type' longer than %d characters" % TYPE_MAX, job_id)
    if not 1 <= msg["attempt"] <= ATTEMPT_MAX:
        raise PoisonMessage("field 'attempt' is not between 1 and %d" % ATTEMPT_MAX, job_id)
    nb = msg.get("not_before")
    if nb is not None:
        if isinstance(nb, bool) or not isinstance(nb, (int, float)) or not math.isfinite(nb):
            raise PoisonMessage("field 'not_before' is not a finite number", job_id)
        if max_delay is not None:
            ahead = nb - (time.time() if now is None else now)
            if ahead > max_delay + NOT_BEFORE_SLACK_SECONDS:
                raise PoisonMessage("field 'not_before' is %.0f s ahead; retries wait at most %.0f s" % (
                    ahead, max_delay), job_id)
    return msg


def job_id_of_key(key: Optional[bytes]) -> Optional[str]:
    """A record's key when it has the shape of a job id (our producers key every message by its
    job id), else None."""
    try:
        text = key.decode("ascii") if isinstance(key, bytes) else None
    except UnicodeDecodeError:
        return None
    return text if text and JOB_ID_PATTERN.fullmatch(text) else None


def encode_event(job_id: str, status: str, result_json: Optional[str] = None, **extra: Any) -> bytes:
    """A status event for jobs.succeeded / jobs.failed / jobs.dead. ``result_json`` is spliced in
    as it was stored (already strict JSON: no second serialisation)."""
    body = {"v": VERSION, "job_id": job_id, "status": status, "at": time.time()}
    body.update(extra)
    text = json.dumps(body, separators=(",", ":"), default=str, allow_nan=False)
    if result_json is not None:
        text = text[:-1] + ',"result":' + result_json + "}"
    return text.encode("utf-8")
