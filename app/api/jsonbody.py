"""Request bodies are parsed strictly, and their nesting is bounded before the parser goes deep:
a body nested thousands of levels deep would otherwise exhaust Python's recursion limit inside
json.loads (a 500). Also refused: NaN/Infinity (Python's extension, not JSON) and integer literals
too long to be any job's argument."""
from __future__ import annotations

import json
import re
import typing

import flask_smorest
from flask import current_app
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from ..messages import strict_loads
from .errors import api_abort

# One pass over the significant bytes: an escape (backslash + any byte, consumed together), a
# quote, a bracket. Each byte is looked at once, whatever the body holds (an earlier pattern that
# matched whole strings re-scanned to the end from every quote of an unterminated one: quadratic).
_SIGNIFICANT = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")
_QUOTE = ord('"')


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (JSON text; invalid text is scanned
    the same way, and the parser refuses it afterwards). Linear, no recursion."""
    depth = deepest = 0
    in_string = False
    for m in _SIGNIFICANT.finditer(data):
        c = m.group()[0]
        if c == _QUOTE:
            in_string = not in_string
        elif in_string or len(m.group()) == 2:
            continue  # brackets inside strings are text; an escape is never structure
        elif c in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c in _CLOSERS:
            depth -= 1
    return deepest


def parse_body(data: bytes, max_depth: int) -> typing.Any:
    """The body as JSON, or a 400 naming the problem."""
    depth = nesting_depth(data)
    if depth > max_depth:
        api_abort(400, "body: JSON nested %d levels deep; at most %d are accepted" % (depth, max_depth),
                  fields={"body": ["Nested deeper than %d levels." % max_depth]})
    try:
        return strict_loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc) if not isinstance(exc, json.JSONDecodeError) else exc.msg
        api_abort(400, "body: invalid JSON: %s" % reason[:200], fields={"body": ["Invalid JSON: %s" % reason[:200]]})


class StrictParser(FlaskParser):
    """webargs' Flask parser (flask-smorest's @arguments), with our JSON parsing of the body."""

    def _raw_load_json(self, req: typing.Any) -> typing.Any:
        if not is_json_request(req):
            return core.missing
        return parse_body(req.get_data(cache=True), int(current_app.config["MAX_JSON_DEPTH"]))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint parsing request bodies with StrictParser."""

    ARGUMENTS_PARSER = StrictParser()
