"""The worker's own exceptions, and the one place store errors are sorted into them."""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError

from app.store import store_unavailable


class Unavailable(Exception):
    """The store or Kafka is down: handle the same record again later; do not commit it."""


class StoreUnavailable(Unavailable):
    """The store is down: nothing of the transaction was written."""


class KafkaUnavailable(Unavailable):
    """Kafka is down: what was to be published waits in the outbox."""


def in_store(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``; a store that is down becomes Unavailable. Any other store error (bad
    data) propagates: it fails the job instead, since retrying it would stall the partition."""
    try:
        return call(*args)
    except SQLAlchemyError as exc:
        if store_unavailable(exc):
            raise StoreUnavailable("store unavailable (%s)" % exc.__class__.__name__) from exc
        raise


#: Longest error text kept with a job (stored, published, put in dead-letter headers).
ERROR_MAX = 2000


def describe(exc: BaseException) -> str:
    """``Class: message`` of an exception, bounded, even if its ``__str__`` misbehaves."""
    try:
        text = str(exc)
    except Exception:
        text = "(unprintable)"
    # No NUL: PostgreSQL refuses it in text (the error would be a store error, not the job's).
    return ("%s: %s" % (exc.__class__.__name__, text)).replace("\x00", "\\x00")[:ERROR_MAX]
