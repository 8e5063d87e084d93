"""The drill's ledger: every job id the API accepted (202), with what was submitted and when, through
the tests' HTTP client (tests/support/httpclient.py). The ledger is the client's memory of promises,
checked against the store and the topics at the end."""
from __future__ import annotations

import random
import threading
import time
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


class Ledger:
    """Thread-safe record of accepted jobs and of refused submissions (by status or error)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: Dict[str, Entry] = {}
        self.refused: Counter = Counter()
        #: Job ids the API named in a refusal (a 503 says which job it recorded as not enqueued).
        self.refused_ids: List[str] = []

    def submit(self, client: Client, job_type: str, args: Dict[str, Any]) -> Optional[Entry]:
        sent = time.time()
        code, body = client.submit(job_type, args)
        if code == 202 and isinstance(body, dict) and body.get("id"):
            entry = Entry(body["id"], job_type, sent, time.time())
            with self.lock:
                self.entries[entry.id] = entry
            return entry
        with self.lock:
            self.refused["%s %s" % (code, body if code == 0 else "")] += 1
            if code >= 500 and isinstance(body, dict) and isinstance(body.get("id"), str):
                self.refused_ids.append(body["id"])
        return None

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
                job_type, args = job_for(self._next(), rng)
                if self.ledger.submit(client, job_type, args) is None:
                    self.stopping.wait(0.2)  # refused (e.g. 503 while Kafka restarts): back off a little
        finally:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)
