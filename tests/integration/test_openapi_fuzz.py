"""Fuzzing the real stack (gunicorn + Kafka + a job worker, SQLite store) from its own OpenAPI
document: every documented operation is exercised, authenticated, and none answers 5xx.

A small example budget keeps this well under a minute; `python -m tests.drills.openapi_fuzz`
runs the bigger one against any stack."""
from __future__ import annotations


import pytest

from tests.drills.openapi_fuzz import INSTALL_HINT, fuzz, schemathesis_bin
from tests.support.httpclient import call
from tests.support.stack import LocalStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(schemathesis_bin() is None, reason="schemathesis not installed: %s" % INSTALL_HINT),
]

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented_operations(base_url: str) -> int:
    spec = call(base_url, "GET", "/openapi.json")[1]
    return sum(1 for item in spec["paths"].values() for method in item if method in HTTP_METHODS)


def test_fuzzed_api_never_answers_5xx(tmp_path):
    # One job worker: accepted jobs succeed, so /result answers 200 as well as 409.
    with LocalStack(str(tmp_path / "stack"), store="sqlite", job_workers=1, LOG_LEVEL="WARNING") as stack:
        result = fuzz(stack.url, stack.token, max_examples=5, seconds=120)
        operations = documented_operations(stack.url)
    print("openapi fuzz: %(requests)d requests over %(operations)d operations, "
          "%(server_errors)d server errors (seed %(seed)s)" % result)
    assert result["requests"] > 0
    assert result["server_errors"] == 0, result["failures"]
    assert result["failures"] == [] and result["errors"] == [], result
    assert result["operations"] == operations
