"""Every error is JSON from one helper: ``{"status", "error", "message", "fields"?}``.

No traceback ever reaches a client; validation errors name each field by its dotted path
(``args.numbers.0``)."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, NoReturn, Optional

from flask import Flask, jsonify
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.http import HTTP_STATUS_CODES

from ..store.db import store_unavailable
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable, default_exceptions

log = logging.getLogger(__name__)


def flatten_messages(messages: Any, prefix: str = "") -> Dict[str, List[str]]:
    """marshmallow's nested {"args": {"numbers": {0: [..]}}} -> {"args.numbers.0": [..]}.
    webargs adds the location ("json", "query") on top; it is dropped, ``_schema`` becomes "body"."""
    out: Dict[str, List[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            key = str(key)
            if not prefix and key in ("json", "query", "querystring", "form", "view_args"):
                out.update(flatten_messages(value, ""))
                continue
            if key == "_schema":
                key = ""
            path = ".".join(p for p in (prefix, key) if p)
            out.update(flatten_messages(value, path))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "body"] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            out.update(flatten_messages(item, prefix))
    else:
        out[prefix or "body"] = [str(messages)]
    return out


def error_response(status: int, message: str, fields: Optional[Dict[str, List[str]]] = None, **extra: Any):
    """The one shape of every error body."""
    body: Dict[str, Any] = {"status": status, "error": _reason(status), "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _reason(status: int) -> str:
    return HTTP_STATUS_CODES.get(status, "Error")


def api_abort(
    status: int,
    message: str,
    fields: Optional[Dict[str, List[str]]] = None,
    headers: Optional[Dict[str, str]] = None,
    **extra: Any,
) -> NoReturn:
    """Stop the request with a JSON error; ``extra`` keys are added to the body."""
    exc = default_exceptions.get(status, HTTPException)(description=message)
    exc.code = status
    exc.data = {"message": message, "fields": fields, "headers": headers, "extra": extra}  # type: ignore[attr-defined]
    raise exc


def handle_http_exception(exc: HTTPException):
    data = getattr(exc, "data", None) or {}
    fields = data.get("fields")
    message = data.get("message") or exc.description or _reason(exc.code or 500)
    if "messages" in data:  # webargs/marshmallow validation errors
        fields = flatten_messages(data["messages"])
        first = sorted(fields)[0]
        message = "%s: %s" % (first, fields[first][0])
    resp = error_response(exc.code or 500, message, fields, **(data.get("extra") or {}))
    # Werkzeug's own headers are part of the answer (RFC 9110: a 405 must say `Allow`); only its
    # HTML Content-Type is replaced by the JSON body's.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            resp.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        resp.headers[name] = value
    return resp


def handle_db_error(exc: SQLAlchemyError):
    """A database that is down or saturated (refused, dropped, pool exhausted) is a 503 the client
    may retry; any other store error is ours: a 500."""
    if not store_unavailable(exc):
        return handle_unexpected(exc)
    log.error("database unavailable: %s", exc.__class__.__name__)
    resp = error_response(ServiceUnavailable.code, "database unavailable, try again later")
    resp.headers["Retry-After"] = "1"
    return resp


def handle_unexpected(exc: Exception):
    # HTTPExceptions never get here: Flask picks the more specific handler above.
    log.exception("unhandled error")
    return error_response(InternalServerError.code, "internal error")


def init_app(app: Flask) -> None:
    # Registered after flask-smorest's own handler, so these win.
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(SQLAlchemyError, handle_db_error)
    app.register_error_handler(Exception, handle_unexpected)
