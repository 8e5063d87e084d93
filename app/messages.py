"""The job message on the wire: JSON, keyed by job id so a job's messages share a partition."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

VERSION = 1


class PoisonMessage(ValueError):
    """A payload that can never be processed (not JSON, wrong shape): dead-letter it, don't stall."""


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
    ).encode("utf-8")


def decode_job(value: Optional[bytes]) -> Dict[str, Any]:
    """The message as a dict, or PoisonMessage naming what is wrong with it."""
    if value is None:
        raise PoisonMessage("empty message")
    try:
        msg = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage("undecodable payload: %s" % exc) from None
    if not isinstance(msg, dict):
        raise PoisonMessage("payload is not a JSON object")
    for key, kind in (("job_id", str), ("type", str), ("args", dict), ("attempt", int)):
        if not isinstance(msg.get(key), kind):
            raise PoisonMessage("field %r missing or not %s" % (key, kind.__name__))
    nb = msg.get("not_before")
    if nb is not None and not isinstance(nb, (int, float)):
        raise PoisonMessage("field 'not_before' is not a number")
    return msg


def encode_event(job_id: str, status: str, **extra: Any) -> bytes:
    """A status event for jobs.succeeded / jobs.failed / jobs.dead."""
    body = {"v": VERSION, "job_id": job_id, "status": status, "at": time.time()}
    body.update(extra)
    return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
