"""The drills' hostile-input phase: what a client (or a bad record on a topic) can throw at the
stack, from several users at once, while a normal user's jobs flow. Nothing of it may stop a
process: afterwards no job worker has been restarted, every hostile request was refused with a
4xx JSON error or its job ended `failed` (or, for fuzzed args that were valid, `succeeded`), every
normal job ended as its type says, a user at the quota got 429 while another user's job ran, and
no user text started a line of its own in the workers' logs."""
from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from app.messages import encode_job
from tests.drills.client import Client, Ledger, Load
from tests.drills.kafka_side import write_records

#: Starts a forged log line; a worker log line that starts with it means a user forged one.
FORGED = "2026-11-28 00:00:00,000 INFO worker[1]: FORGED"

Shape = Tuple[str, bytes, Dict[str, str]]


def hostile_bodies() -> List[Shape]:
    """(name, body, extra headers) of requests the API must refuse with a 4xx: every shape seen
    in the hostile-input issue and its relatives."""
    digits = b"9" * 4300
    deep = b"[" * 5000 + b"]" * 5000

    def sum_of(numbers: bytes) -> bytes:
        return b'{"type": "sum", "args": {"numbers": ' + numbers + b"}}"

    return [
        ("sum of two 4300-digit ints", sum_of(b"[" + digits + b", " + digits + b"]"), {}),
        ("args nested 5000 deep", sum_of(deep), {}),
        ("body nested 5000 deep", deep, {}),
        ("sum of [1e308, 1e308]", sum_of(b"[1e308, 1e308]"), {}),
        ("sum beyond 2**53", sum_of(b"[9007199254740993]"), {}),
        ("NaN literal", sum_of(b"[NaN]"), {}),
        ("Infinity literal", b'{"type": "sleep", "args": {"seconds": Infinity}}', {}),
        ("1e400 (parses to inf)", sum_of(b"[1e400]"), {}),
        ("1001 numbers", sum_of(json.dumps([1] * 1001).encode()), {}),
        ("sleep beyond the bound", b'{"type": "sleep", "args": {"seconds": 3600}}', {}),
        ("fail message of 1001 chars", json.dumps({"type": "fail", "args": {"message": "x" * 1001}}).encode(), {}),
        ("unknown type", b'{"type": "rm -rf", "args": {}}', {}),
        ("extra envelope key", b'{"type": "noop", "args": {}, "priority": 1}', {}),
        ("invalid UTF-8", b'{"type": "fail", "args": {"message": "\xff\xfe"}}', {}),
        ("truncated JSON", b'{"type": "sum", "args": {"numbers": [1, 2', {}),
        ("body over 64 KiB", sum_of(json.dumps([1] * 40000).encode()), {}),
        ("not JSON content type", b"type=sum", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("4 KiB garbage token", b'{"type": "noop", "args": {}}', {"Authorization": "Bearer " + "A" * 4000}),
    ]


def fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value biased towards edges: bounds of every job type's fields, wrong types,
    control characters, nesting."""
    pick = rng.randrange(12 if depth < 4 else 9)
    if pick == 0:
        return rng.choice([0, 1, -1, 2 ** 53, 2 ** 53 + 1, -(2 ** 53) - 1, 10 ** 18, 60, 61, 1000, 1001])
    if pick == 1:
        return rng.choice([0.0, -0.0, 1e-320, 1e308, -1e308, 60.0001, 0.01, 2.0 ** 53, 1.5])
    if pick == 2:
        return rng.choice(["", "0", "1", "x" * 1001, "\u0000", "line\nbreak", "\u202e", "%s%n", "\ud7ff" * 3])
    if pick == 3:
        return rng.choice([True, False, None])
    if pick == 4:
        return FORGED  # as a string where a number is wanted: refused; as a message: logged quoted
    if pick in (5, 6, 7, 8):
        return rng.uniform(-1e6, 1e6) if rng.random() < 0.5 else rng.randint(-1000, 1000)
    if pick in (9, 10):
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {rng.choice(["numbers", "seconds", "message", "x"]): fuzz_value(rng, depth + 1)
            for _ in range(rng.randrange(3))}


def fuzz_args(rng: random.Random, job_type: str) -> Any:
    """Args for ``job_type``: the right keys with fuzzed values mostly, now and then anything.
    A fuzzed `sleep` that would be valid is kept short, so the phase stays bounded."""
    if rng.random() < 0.15:
        return fuzz_value(rng)
    if job_type == "sum":
        return {"numbers": [fuzz_value(rng, 3) for _ in range(rng.randrange(5))] if rng.random() < 0.8
                else fuzz_value(rng)}
    if job_type == "sleep":
        seconds = fuzz_value(rng, 3)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds <= 60:
            seconds = min(seconds, 0.05)
        return {"seconds": seconds}
    if job_type == "fail":
        return {"message": fuzz_value(rng, 3)}
    return {} if rng.random() < 0.7 else {"x": fuzz_value(rng, 3)}


class HostilePhase:
    """Run with ``run()``; returns the figures and ``ok``. ``target`` offers new_token, revoke,
    worker_pids, process_exits, forged_log_lines, quota, audit, bootstrap, topics, url
    (see targets.py)."""

    def __init__(self, target: Any, fuzz_per_type: int = 40, seed: int = 9, seconds: float = 240) -> None:
        self.target = target
        self.fuzz_per_type = fuzz_per_type
        self.rng = random.Random(seed)
        self.deadline = time.monotonic() + seconds
        self.tag = uuid.uuid4().hex[:6]
        self.problems: List[str] = []
        self.sent = 0
        self.accepted: Dict[str, str] = {}  # job id -> what it must end as: "failed", "terminal", "cancelled|succeeded"

    def _expect(self, ok: bool, what: str) -> None:
        if not ok and len(self.problems) < 20:
            self.problems.append(what)

    def _send(self, client: Client, name: str, body: bytes,
              headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, Dict[str, str]]:
        """POST ``body``; a proxy's rate limit (nginx limit_req: a 429 that is not the app's
        quota) is waited out and the request sent again, a few times at most."""
        self.sent += 1
        for _ in range(20):
            status, answer, got = client.raw("POST", "/v1/jobs", body, headers)
            if status != 429 or (isinstance(answer, dict) and "active" in answer):
                break
            time.sleep(min(2.0, float(got.get("retry-after") or 0.2)))
        return status, answer, got

    # -- the parts ------------------------------------------------------------------------------
    def refused_shapes(self, client: Client) -> int:
        refused = 0
        for name, body, headers in hostile_bodies():
            status, answer, _h = self._send(client, name, body, headers)
            good = 400 <= status < 500 and isinstance(answer, dict) and answer.get("status") == status
            self._expect(good, "%s: %s %r" % (name, status, answer if not isinstance(answer, str) else answer[:80]))
            refused += good
        return refused

    def forged_log_job(self, client: Client) -> None:
        body = {"type": "fail", "args": {"message": "boom\n" + FORGED + " job x: running -> succeeded"}}
        status, answer, _h = self._send(client, "log forging", json.dumps(body).encode())
        self._expect(status == 202, "log-forging fail job: %s %r" % (status, answer))
        if status == 202:
            self.accepted[answer["id"]] = "failed"

    def fuzz(self, client: Client) -> Dict[str, int]:
        counts = {"2xx": 0, "4xx": 0, "other": 0}
        for job_type in ("sum", "sleep", "fail", "noop"):
            for _ in range(self.fuzz_per_type):
                body = json.dumps({"type": job_type, "args": fuzz_args(self.rng, job_type)}).encode()
                status, answer, _h = self._send(client, "fuzz " + job_type, body)
                if status == 202:
                    counts["2xx"] += 1
                    self.accepted[answer["id"]] = "failed" if job_type == "fail" else "terminal"
                elif 400 <= status < 500 and status != 429 and isinstance(answer, dict):
                    counts["4xx"] += 1
                else:
                    counts["other"] += 1
                    self._expect(False, "fuzz %s %s: %s %r" % (job_type, body[:120], status, answer))
        return counts

    def hostile_records(self, client: Client) -> int:
        """Retry records nobody's producer would write, keyed by real jobs of this phase."""
        ids = []
        for _ in range(3):
            status, answer, _h = self._send(client, "noop for records", b'{"type": "noop", "args": {}}')
            if status == 202:
                ids.append(answer["id"])
                self.accepted[answer["id"]] = "terminal"
        self._expect(len(ids) == 3, "could not submit the jobs the hostile records name")
        now = time.time()
        records = []
        for job_id, mangle in zip(ids, (
                lambda v: v.replace(b'"not_before":1.0', b'"not_before":Infinity'),
                lambda v: v.replace(b'"not_before":1.0', b'"not_before":%d' % (now + 10 ** 9)),
                lambda v: v.replace(b'"args":{}', b'"args":{"x":%s%s}' % (b"[" * 20000, b"]" * 20000)))):
            records.append((job_id.encode(), mangle(encode_job(job_id, "noop", {}, attempt=2, not_before=1.0)), None))
        write_records(self.target.bootstrap, self.target.topics.retry, records)
        self.sent += len(records)
        self.records = [v for _k, v, _p in records]
        return len(records)

    def quota(self, hog: Client, other: Client) -> Dict[str, Any]:
        """Fill the hog's quota with short sleep jobs, expect the app's 429, see another user's
        job run meanwhile, then cancel what is still queued. Bounded by the phase's deadline."""
        limit = self.target.quota
        hog_ids: List[str] = []
        got: Optional[Tuple[int, Any, Dict[str, str]]] = None
        # Short jobs: the worker runs a few while the fill goes on (each one frees a place).
        body = b'{"type": "sleep", "args": {"seconds": 0.2}}'
        while len(hog_ids) <= limit * 1.2 + 100 and time.monotonic() < self.deadline:
            status, answer, headers = self._send(hog, "quota fill", body)
            if status == 202:
                hog_ids.append(answer["id"])
            elif status == 429:
                got = (status, answer, headers)
                break
            else:
                self._expect(False, "quota fill: %s %r" % (status, answer))
                time.sleep(0.2)
        self._expect(got is not None, "no 429 after %d jobs (quota %d)" % (len(hog_ids), limit))
        if got is not None:
            self._expect(got[2].get("retry-after", "").isdigit(), "429 without a Retry-After: %r" % got[2])
        # The quota holds back the hog only: another user's job is accepted now, and runs once
        # the hog's queued jobs (ahead of it on its partition) are cancelled.
        entry = Ledger().submit(other, "sum", {"numbers": [1, 2]})
        self._expect(entry is not None, "another user was refused while one user was at the quota")
        cancelled = 0
        for job_id in hog_ids:
            status, _answer = hog.request("POST", "/v1/jobs/%s/cancel" % job_id)
            cancelled += status == 200
            self.accepted[job_id] = "cancelled|succeeded"
        ran = entry is not None and self._wait(other, [entry.id], "succeeded", 120)
        self._expect(ran, "another user's job did not run after the hog's jobs were cancelled")
        return {"quota": limit, "filled": len(hog_ids), "got_429": got is not None, "other_ran": ran,
                "cancelled": cancelled}

    def revoked(self, client: Client, name: str) -> bool:
        """A token in use (so remembered by the app's token cache) is refused `token revoked` within
        the cache's bound after its revocation, and from then on."""
        body = b'{"type": "noop", "args": {}}'
        status, answer, _h = self._send(client, "token before its revocation", body)
        self._expect(status == 202, "token before its revocation: %s %r" % (status, answer))
        if status == 202:
            self.accepted[answer["id"]] = "terminal"
        self.target.revoke(name)
        revoked_at = time.monotonic()
        bound = self.target.token_cache_seconds + 1.0  # the cache's bound, and room for the request
        while True:
            status, answer, _h = self._send(client, "revoked token", body)
            if status == 202:
                self.accepted[answer["id"]] = "terminal"
            refused = status == 401 and isinstance(answer, dict) and answer.get("message") == "token revoked"
            if refused or time.monotonic() - revoked_at > bound:
                break
            time.sleep(0.1)
        took = time.monotonic() - revoked_at
        # Each process (every gunicorn worker; in the cluster, every app node's) remembers the token
        # for up to the bound on its own: one refusal says that process has let go, not all of them.
        # Once the bound has passed, every request must be refused, whichever process serves it.
        time.sleep(max(0.0, revoked_at + bound - time.monotonic()))
        again = []
        for _ in range(6):
            code, answer2, _h = self._send(client, "revoked token, again", body)
            if code == 202:
                self.accepted[answer2["id"]] = "terminal"
            again.append(code)
        ok = refused and all(code == 401 for code in again)
        self._expect(ok, "revoked token: still %s %r after %.1f s (bound %.1f s); after the bound: %s" % (
            status, answer, took, bound, again))
        return ok

    def _wait(self, client: Client, ids: List[str], status: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        remaining = set(ids)
        while remaining and time.monotonic() < deadline:
            remaining = {i for i in remaining if client.status(i) != status}
            if remaining:
                time.sleep(0.2)
        return not remaining

    # -- the whole phase -------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        t = self.target
        began = time.monotonic()
        names = {role: "%s-%s" % (role, self.tag) for role in ("normal", "hostile", "fuzz", "hog", "revoked")}
        tokens = {role: t.new_token(name) for role, name in names.items()}
        clients = {role: Client(t.url, token) for role, token in tokens.items()}
        pids_before = t.worker_pids()
        exits_before = len(t.process_exits())
        normal = Ledger()
        load = Load(normal, t.url, tokens["normal"], rate=10, threads=2, max_jobs=10000,
                    max_seconds=max(10.0, self.deadline - time.monotonic()))
        load.start()
        try:
            refused = self.refused_shapes(clients["hostile"])
            self.forged_log_job(clients["hostile"])
            fuzz = self.fuzz(clients["fuzz"])
            records = self.hostile_records(clients["hostile"])
            quota = self.quota(clients["hog"], clients["normal"])
            revoked = self.revoked(clients["revoked"], names["revoked"])
        finally:
            load.stop()
            for c in clients.values():
                c.close()
        outcome = self._settle(normal)
        pids_after = t.worker_pids()
        # A worker that died shows in both (its exit, and its replacement's new pid): count it once.
        crashes = max(len(t.process_exits()) - exits_before, len(pids_before - pids_after))
        forged = t.forged_log_lines(FORGED)
        dead = self._dead_records()
        report = {"hostile": self.sent, "refused_4xx": refused, "shapes": len(hostile_bodies()), "fuzz": fuzz,
                  "records": records, "records_dead_lettered": dead, "quota": quota, "revoked_401": revoked,
                  "normal_jobs": outcome["normal"], "normal_wrong": outcome["normal_wrong"],
                  "hostile_jobs": len(self.accepted), "hostile_wrong": outcome["hostile_wrong"],
                  "worker_crashes": crashes, "forged_log_lines": forged}
        self._expect(crashes == 0, "job workers restarted during the phase: %d (pids %s -> %s)" % (
            crashes, sorted(pids_before), sorted(pids_after)))
        self._expect(forged == 0, "%d forged lines in the worker logs" % forged)
        self._expect(dead == records, "hostile records dead-lettered: %d of %d" % (dead, records))
        report["seconds"] = round(time.monotonic() - began, 1)
        report["problems"] = self.problems
        report["ok"] = not self.problems
        return report

    def _settle(self, normal: Ledger) -> Dict[str, Any]:
        """Wait (bounded) until every job of the phase is terminal; check each outcome."""
        expected = {"sum": "succeeded", "sleep": "succeeded", "fail": "failed"}
        entries = normal.snapshot()
        ids = [e.id for e in entries] + list(self.accepted)
        deadline = time.monotonic() + 180
        while True:
            audit = self.target.audit(ids)
            if (not audit["not_terminal"] and not audit["unknown"]) or time.monotonic() > deadline:
                break
            time.sleep(2)
        jobs = audit["jobs"]
        normal_wrong = [e.id for e in entries if jobs.get(e.id, {}).get("status") != expected[e.type]]
        allowed: Dict[str, Callable[[str], bool]] = {
            "failed": lambda s: s == "failed",
            "terminal": lambda s: s in ("succeeded", "failed"),
            "cancelled|succeeded": lambda s: s in ("cancelled", "succeeded"),
        }
        hostile_wrong = [i for i, want in self.accepted.items() if not allowed[want](jobs.get(i, {}).get("status", ""))]
        self._expect(not normal_wrong, "normal jobs not as expected: %s" % normal_wrong[:5])
        self._expect(not hostile_wrong, "hostile-phase jobs not terminal as expected: %s" % [
            (i, jobs.get(i, {}).get("status")) for i in hostile_wrong[:5]])
        return {"normal": len(entries), "normal_wrong": len(normal_wrong), "hostile_wrong": len(hostile_wrong)}

    def _dead_records(self) -> int:
        from tests.drills.kafka_side import read_all

        values = {v for _k, v, _h in read_all(self.target.bootstrap, self.target.topics.dead)}
        return sum(1 for v in getattr(self, "records", []) if v in values)
