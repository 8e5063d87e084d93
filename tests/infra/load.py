"""Steady HTTP load through the lab's nginx (127.0.0.1:$LAB_HTTP_PORT) while a task runs: the
deploy gate and the graceful-restart test count its failures (there must be none)."""
from __future__ import annotations

import threading
import time

from tests.infra.conftest import http_port
from tests.support import httpclient as http

BASE = "http://127.0.0.1:%d" % http_port()


def call(method, path, token, body=None, timeout=10):
    """(status, JSON) from the lab's nginx; an error status or a broken connection raises OSError."""
    return http.call(BASE, method, path, token, body, timeout)


class Load:
    """Threads mixing POST /v1/jobs and GET /v1/jobs/<id> until stopped (at most 300 s), at most
    ``rate`` submissions per second in all: steady load, not saturation. Unpaced, 4 threads
    submitted up to ~120/s here, faster than one job worker drains while a deploy takes CPU, and
    the backlog reached the app's per-user quota (JOBLAB_USER_MAX_ACTIVE: 429 from the app)."""

    def __init__(self, token, threads=4, rate=40.0):
        self.token, self.stop_at = token, time.monotonic() + 300
        self.interval = threads / rate  # seconds between one thread's submissions
        self.ok = 0
        self.failures = []
        self.job_ids = []
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]

    def loop(self):
        last = None
        next_post = time.monotonic()
        while self.running and time.monotonic() < self.stop_at:
            try:
                if last is None:
                    time.sleep(max(0.0, next_post - time.monotonic()))
                    next_post = max(next_post + self.interval, time.monotonic() - self.interval)
                    status, body = call("POST", "/v1/jobs", self.token, {"type": "sum", "args": {"numbers": [1, 2]}})
                    ok = status == 202 and isinstance(body, dict)
                    last = body.get("id") if ok else None
                    with self.lock:
                        self.job_ids.append(last)
                else:
                    status, _ = call("GET", "/v1/jobs/" + last, self.token)
                    ok, last = status == 200, None
            except (OSError, ValueError) as exc:
                ok, status, last = False, repr(exc), None
            with self.lock:
                if ok:
                    self.ok += 1
                else:
                    self.failures.append(status)

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        time.sleep(1)
        self.running = False
        for t in self.threads:
            t.join(30)
