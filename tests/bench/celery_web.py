"""The seed's stack behind the same front as ours: a Flask endpoint, served by gunicorn with our
devops/gunicorn.conf.py (same worker class and count), that checks a bearer token, validates a
JSON body and calls Celery's ``delay()`` (tests/bench/celery_app.py) - what the original project's
users ran in front of Celery.

    BENCH_REDIS_URL=... BENCH_TOKEN=... gunicorn -c devops/gunicorn.conf.py tests.bench.celery_web:app
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Dict, Tuple

from flask import Flask, request

from tests.bench.celery_app import app as celery

#: Args each task takes, and their JSON types (a check of the same kind as our schemas', smaller).
TASKS: Dict[str, Dict[str, type]] = {"noop": {}, "sleep": {"seconds": float}, "digest": {"rounds": int}}

app = Flask(__name__)
_TOKEN = hashlib.sha256(os.environ.get("BENCH_TOKEN", "").encode()).digest()


def _bad(status: int, message: str) -> Tuple[Dict[str, Any], int]:
    return {"error": message}, status


@app.post("/jobs")
def submit() -> Any:
    auth = request.headers.get("Authorization", "")
    given = hashlib.sha256(auth[7:].encode()).digest() if auth.startswith("Bearer ") else b""
    if not hmac.compare_digest(given, _TOKEN):
        return _bad(401, "missing or invalid token")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("type") not in TASKS or not isinstance(body.get("args", {}), dict):
        return _bad(400, "body: {type, args} expected")
    spec, args = TASKS[body["type"]], body.get("args", {})
    if set(args) != set(spec) or not all(isinstance(args[k], t) or (t is float and isinstance(args[k], int))
                                         for k, t in spec.items()):
        return _bad(400, "args: %s expected" % sorted(spec))
    result = celery.tasks[body["type"]].delay(**args)
    return {"id": result.id, "status": "queued"}, 202


@app.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}
