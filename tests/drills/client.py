"""The drill's ledger: every job id the API accepted (202), with what was submitted and when, through
the tests' HTTP client (tests/support/httpclient.py). The ledger is the client's memory of promises,
checked against the store and the topics at the end."""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from tests.support.httpclient import Client


@dataclass
class Entry:
    id: str
    type: str
    sent: float      # client clock when the request went out
    accepted: float  # ... and when the 202 came back


#: Times a submit with an Idempotency-Key is sent again after its connection dropped.
RESENDS = 2


class Ledger:
    """Thread-safe record of accepted jobs and of refused submissions (by status or error).

    A submit with an Idempotency-Key whose connection drops (an nginx reload closing a keep-alive
    connection, an app node killed mid-request) is sent again with the same key, as a client
    that uses keys does: the API answers a replay with the job the first attempt stored, so a
    resend never makes a second job. Without a key, a dropped connection is a refusal: the
    client cannot know whether its job was stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: Dict[str, Entry] = {}
        self.refused: Counter = Counter()
        #: Job ids the API named in a refusal (a 503 says which job it recorded as not enqueued).
        self.refused_ids: List[str] = []
        self.resent: Counter = Counter()  # transport error -> resends after it
        self.replayed = 0  # resends answered with the job their first attempt had stored

    def submit(self, client: Client, job_type: str, args: Dict[str, Any], keyed: bool = False) -> Optional[Entry]:
        sent = time.time()
        data = json.dumps({"type": job_type, "args": args}).encode()
        key = {"Idempotency-Key": uuid.uuid4().hex} if keyed else None
        for attempt in range(1 + (RESENDS if keyed else 0)):
            if attempt:
                time.sleep(0.1 * attempt)
            code, body, headers = client.raw("POST", "/v1/jobs", data, key)
            if code != 0 or attempt == (RESENDS if keyed else 0):
                break
            with self.lock:
                self.resent[body] += 1
        if code == 202 and isinstance(body, dict) and body.get("id"):
            entry = Entry(body["id"], job_type, sent, time.time())
            with self.lock:
                self.entries[entry.id] = entry
                self.replayed += headers.get("idempotent-replayed") == "true"
            return entry
        with self.lock:
            self.refused["%s %s" % (code, body if code == 0 else "")] += 1
            if code >= 500 and isinstance(body, dict) and isinstance(body.get("id"), str):
                self.refused_ids.append(body["id"])
        return None

    def resent_total(self) -> int:
        with self.lock:
            return sum(self.resent.values())

    def refused_total(self) -> int:
        with self.lock:
            return sum(self.refused.values())

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)

    def snapshot(self) -> List[Entry]:
        with self.lock:
            return list(self.entries.values())


def job_for(n: int, rng: random.Random) -> Tuple[str, Dict[str, Any]]:
    """The drill's mix by sequence number: 1 in 20 `fail`, 3 in 20 short `sleep`, the rest `sum`."""
    slot = n % 20
    if slot == 7:
        return "fail", {"message": "drill failure #%d" % n}
    if slot in (3, 11, 17):
        return "sleep", {"seconds": round(rng.uniform(0.02, 0.1), 3)}
    return "sum", {"numbers": [rng.randint(-1000, 1000) for _ in range(rng.randint(1, 8))]}


class Load:
    """``threads`` submitters sharing a global rate of ``rate`` jobs/s, until ``stop()``, or
    ``max_jobs`` accepted, or ``max_seconds`` — whichever comes first (always bounded)."""

    def __init__(self, ledger: Ledger, base_url: str, token: str, rate: float, threads: int,
                 max_jobs: int, max_seconds: float, seed: int = 7) -> None:
        self.ledger = ledger
        self.base_url, self.token = base_url, token
        self.interval = threads / rate
        self.threads_n = threads
        self.max_jobs, self.max_seconds = max_jobs, max_seconds
        self.seed = seed
        self.stopping = threading.Event()
        self.counter = 0
        self.count_lock = threading.Lock()
        self.threads: List[threading.Thread] = []

    def start(self) -> None:
        self.deadline = time.monotonic() + self.max_seconds
        for i in range(self.threads_n):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name="load-%d" % i)
            t.start()
            self.threads.append(t)

    def _next(self) -> int:
        with self.count_lock:
            self.counter += 1
            return self.counter

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        client = Client(self.base_url, self.token)
        due = time.monotonic() + index * self.interval / self.threads_n
        try:
            while not self.stopping.is_set() and len(self.ledger) < self.max_jobs and time.monotonic() < self.deadline:
                pause = due - time.monotonic()
                if pause > 0:
                    self.stopping.wait(pause)
                due = max(due + self.interval, time.monotonic() - self.interval)
                n = self._next()
                job_type, args = job_for(n, rng)
                # Three submits in four carry an Idempotency-Key (resent after a dropped
                # connection); the fourth takes the API's plain path, as clients without keys do.
                if self.ledger.submit(client, job_type, args, keyed=n % 4 != 0) is None:
                    self.stopping.wait(0.2)  # refused (e.g. 503 while Kafka restarts): back off a little
        finally:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)
