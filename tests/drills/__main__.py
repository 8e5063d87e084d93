"""Fault drills: `make drills` (local stack) / `make drills LAB=1` (the running lab).

First a hostile-input phase (tests/drills/hostile.py): hostile requests and records from several
users while normal jobs flow; no worker may die of them. Then it submits a mix of jobs at a steady
rate while breaking the stack on purpose (worker SIGKILLs, a
Kafka restart, a database restart, gunicorn graceful reloads, a rebalance), keeping a ledger of
every job id that got a 202. Then drains and checks the ledger against the store and the topics.
The last line is the verdict, e.g. `... lost=0 duplicates=0 stuck=0`; exit 1 unless every check
holds. Every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from app.config import DEFAULTS
from app.published import partition_of
from tests.drills.client import Client, Ledger, Load
from tests.drills.hostile import HostilePhase
from tests.support.figures import fmt_latency, latency_summary
from tests.drills.kafka_side import read_all, write_poison
from tests.drills.cluster import ClusterTarget
from tests.drills.targets import LabTarget, LocalTarget


def say(msg: str) -> None:
    print("drills: %s" % msg, flush=True)


def wait_succeeded(client: Client, ids: List[str], deadline: float) -> bool:
    """Poll until every id is succeeded, or the (absolute, time.time()) deadline passes."""
    remaining = set(ids)
    while remaining and time.time() < deadline:
        for job_id in list(remaining):
            if client.status(job_id) == "succeeded":
                remaining.discard(job_id)
        if remaining:
            time.sleep(0.1)
    return not remaining


def probe_recovery(client: Client, ledger: Ledger, partitions: int, since: float, seconds: float) -> Optional[float]:
    """Seconds from ``since`` until a fresh job on EVERY partition of the jobs topic has gone
    through end to end (202, worker, store): the whole pipeline works again. None if not within
    ``seconds``. The probe ids are computed with the producer's own partitioner."""
    deadline = since + seconds
    first: Dict[int, str] = {}
    for n in range(20 * partitions):  # bounded; ~4x the expected submissions
        if len(first) == partitions or time.time() >= deadline:
            break
        entry = ledger.submit(client, "sum", {"numbers": [n, 1]})
        if entry is None:
            time.sleep(0.25)  # refused while the fault lasts
            continue
        first.setdefault(partition_of(entry.id, partitions), entry.id)
    if len(first) < partitions or not wait_succeeded(client, list(first.values()), deadline):
        return None
    return time.time() - since


def settle(client: Client, ledger: Ledger, partitions: int, seconds: float, quick: float = 2.0) -> Optional[float]:
    """Probe until a job on every partition goes through within ``quick`` seconds (no backlog
    left); the seconds it took, or None after ``seconds``."""
    begin = time.time()
    while time.time() - begin < seconds:
        start = time.time()
        took = probe_recovery(client, ledger, partitions, start, max(1.0, seconds - (start - begin)))
        if took is not None and took <= quick:
            return time.time() - begin
    return None


def fault_plan(target: Any) -> List[Tuple[str, Callable[[], str]]]:
    """Faults in the order they are injected: spread over the run, one at a time (the cluster
    target has its own: tests/drills/cluster.py)."""
    if callable(getattr(type(target), "fault_plan", None)):
        return target.fault_plan()
    return [
        ("worker SIGKILL 1", target.kill_worker),
        ("gunicorn reload 1", target.reload_web),
        ("gunicorn worker SIGKILL 1", target.kill_web_worker),
        ("worker SIGKILL 2", target.kill_worker),
        ("kafka restart", target.restart_kafka),
        ("gunicorn worker SIGKILL 2", target.kill_web_worker),
        ("worker SIGKILL 3", target.kill_worker),
        ("rebalance: worker joins", target.worker_join),
        ("worker SIGKILL 4", target.kill_worker),
        ("rebalance: worker leaves", target.worker_leave),
        ("database restart", target.restart_db),
        ("gunicorn reload 2", target.reload_web),
        ("gunicorn worker SIGKILL 3", target.kill_web_worker),
        ("worker SIGKILL 5", target.kill_worker),
    ]


def dup_execution_bound(plan: List[Tuple[str, Callable[[], str]]], batch: int = DEFAULTS["WORKER_BATCH"]) -> int:
    """The most claims beyond need (``dup_executions``: attempts a job did not need) the faults can
    explain. A worker handles a poll's records as a batch: their jobs claimed together, run one
    after another, their successes stored together at the checkpoint. SIGKILLed, it leaves the
    batch's unconcluded jobs claimed - run, or not started yet - and their next owner claims each
    once more: at most ``batch`` per kill. A rebalance moves partitions between polls, so it can
    catch at most the job of a worker mid-batch that lost its partition: one. Kafka and database
    restarts and gunicorn reloads re-run nothing: a job's outcome is kept until it is stored
    (worker.decided), and a redelivered message of an attempt that ran is skipped.
    (In the cluster: an app node lost whole is a SIGKILL of each of its job workers; a broker
    fault moves the group's partitions at most once per app node, a rolling deploy twice per job
    worker (it leaves, then joins): rebalances.)"""
    kills = sum(1 for name, _inject in plan if name.startswith("worker SIGKILL"))
    kills += sum(workers_per_node() for name, _inject in plan if name == "app node loss")
    moves = sum(1 for name, _inject in plan if name.startswith("rebalance"))
    moves += sum(app_nodes() for name, _inject in plan if name.startswith(("broker", "network", "app node")))
    # A rolling deploy restarts every job worker: each leaves, then joins (two moves).
    moves += sum(2 * workers_per_node() * app_nodes() for name, _inject in plan if name == "rolling deploy")
    return kills * batch + moves


def workers_per_node() -> int:
    from fablib import labfile

    return int(labfile.settings()["LAB_JOB_WORKERS"])


def app_nodes() -> int:
    from fablib import labfile

    return len(labfile.with_role("app"))


def run_faults(target: Any, ledger: Ledger, load: Load, jobs: int, recovery_seconds: float,
               hard_deadline: float) -> List[Dict[str, Any]]:
    plan = fault_plan(target)
    client = Client(target.url, target.token)
    done: List[Dict[str, Any]] = []
    try:
        for i, (name, inject) in enumerate(plan):
            # Spread over the accepted-jobs count: fault i once (i+1)/(n+1) of the jobs are in.
            threshold = jobs * (i + 1) // (len(plan) + 1)
            seen, progress_at = len(ledger), time.monotonic()
            while len(ledger) < threshold and time.monotonic() < hard_deadline and not load.done():
                if len(ledger) != seen:
                    seen, progress_at = len(ledger), time.monotonic()
                elif time.monotonic() - progress_at > recovery_seconds:
                    raise RuntimeError("no job accepted for %.0f s before fault %d (%s); refused so far: %s" % (
                        recovery_seconds, i + 1, name, dict(ledger.refused)))
                time.sleep(0.1)
            # Let the previous fault's backlog clear first, so each recovery is measured on its own
            # and the run has calm stretches (the "without faults" latencies).
            settled = settle(client, ledger, target.partitions, min(recovery_seconds, max(5.0, hard_deadline - time.monotonic())))
            if settled is None:
                say("fault %2d/%d: the stack did not settle; injecting anyway" % (i + 1, len(plan)))
            start = time.time()
            refused_before = ledger.refused_total()
            what = inject()
            recovery = probe_recovery(client, ledger, target.partitions, start, recovery_seconds)
            end = time.time() if recovery is None else start + recovery
            refused = ledger.refused_total() - refused_before
            done.append({"name": name, "what": what, "start": start, "end": end, "recovery": recovery,
                         "accepted_before": len(ledger), "refused": refused})
            say("fault %2d/%d %-26s recovered in %s, %d submits refused  (%s)" % (
                i + 1, len(plan), name, "%.1f s" % recovery if recovery is not None else "NOT WITHIN %.0f s" % recovery_seconds,
                refused, what))
    finally:
        client.close()
    return done


def drain(target: Any, ids: List[str], seconds: float) -> Dict[str, Any]:
    """Audit until no accepted job is left unfinished, or ``seconds`` pass; the last audit."""
    deadline = time.monotonic() + seconds
    while True:
        report = target.audit(ids)
        if not report["not_terminal"] and not report["unknown"]:
            return report
        if time.monotonic() > deadline:
            return report
        time.sleep(2)


def wait_stranded(target: Any) -> Tuple[int, int, float]:
    """Jobs left `queued` after the drain, table-wide: a gunicorn worker SIGKILLed between a job's
    INSERT and its produce leaves one its client never got an id for. The workers' sweep must send
    each within the target's bound; wait (bounded by it) until none is left. Returns (queued at
    first, still queued past the bound = stranded, seconds waited)."""
    bound = target.stranded_bound
    start = time.monotonic()
    first = None
    while True:
        ages = target.audit([])["queued_ages"]
        first = len(ages) if first is None else first
        waited = time.monotonic() - start
        if not ages or waited > bound:
            return first, sum(1 for age in ages.values() if age > bound), waited
        time.sleep(2)


def wait_outbox(target: Any) -> Tuple[int, float]:
    """Messages decided with an outcome but not yet on Kafka wait in the store's outbox: the worker
    that wrote them publishes them at once, or - if it was killed first - any worker does once
    their lease runs out (worker/defaults.py outbox_lease_seconds). The topics are read only after
    that. Returns (rows still there after the bound, seconds waited)."""
    from worker.defaults import outbox_lease_seconds

    bound = outbox_lease_seconds(float(target.job_max_seconds)) + 30
    start = time.monotonic()
    while True:
        pending = target.audit([])["outbox_pending"]
        waited = time.monotonic() - start
        if not pending or waited > bound:
            return pending, waited
        time.sleep(5)


def analyse(target: Any, entries: List[Any], audit: Dict[str, Any], faults: List[Dict[str, Any]],
            poison: List[bytes], poison_at: float, max_attempts: int) -> Dict[str, Any]:
    jobs = audit["jobs"]
    by_type: Dict[str, List[str]] = {}
    for e in entries:
        by_type.setdefault(e.type, []).append(e.id)
    expected = {"sum": "succeeded", "sleep": "succeeded", "fail": "failed"}
    wrong = [e.id for e in entries if e.id in jobs and jobs[e.id]["status"] in ("succeeded", "failed", "cancelled")
             and jobs[e.id]["status"] != expected[e.type]]
    # Claims beyond what the job needed: a job that cannot fail needs one; `fail` needs max_attempts.
    dup_exec = sum(max(0, jobs[i]["attempts"] - 1) for t in ("sum", "sleep") for i in by_type.get(t, []) if i in jobs)
    dup_exec += sum(max(0, jobs[i]["attempts"] - max_attempts) for i in by_type.get("fail", []) if i in jobs)

    dead = read_all(target.bootstrap, target.topics.dead)
    dead_keys: Dict[str, int] = {}
    # Distinct dead letters per job: two different ones would be two decisions (a bug). A
    # byte-identical second copy is one produce that Kafka kept although it answered the producer
    # with a timeout (acks=all while a broker was being fenced), and that the producer sent again:
    # Kafka without transactions delivers at least once. Counted and shown, not a failure.
    dead_distinct: Dict[str, set] = {}
    for key, value, headers in dead:
        k = key.decode("utf-8", "replace")
        dead_keys[k] = dead_keys.get(k, 0) + 1
        dead_distinct.setdefault(k, set()).add((value, tuple(sorted(headers.items()))))
    dead_values = {value for _k, value, _h in dead}
    fail_ids = by_type.get("fail", [])
    missing_dlq = [i for i in fail_ids if i not in dead_keys]
    unexpected_dlq = [e.id for e in entries if e.type != "fail" and e.id in dead_keys]
    poison_dead = sum(1 for v in poison if v in dead_values)
    after_poison = [e.id for e in entries if e.accepted > poison_at]
    after_poison_done = sum(1 for i in after_poison if i in jobs and jobs[i]["status"] in ("succeeded", "failed"))

    # End-to-end latency (store clock: created -> finished) of jobs that cannot fail, split by
    # whether the job's lifetime overlapped a fault (injection until recovery).
    windows = [(f["start"], f["end"]) for f in faults]
    calm, faulty = [], []
    for t in ("sum", "sleep"):
        for i in by_type.get(t, []):
            j = jobs.get(i)
            if not j or j["status"] != "succeeded" or j["finished"] is None:
                continue
            overlaps = any(j["created"] <= end and j["finished"] >= start for start, end in windows)
            (faulty if overlaps else calm).append(j["finished"] - j["created"])
    return {
        "accepted": len(entries),
        "by_type": {t: len(v) for t, v in by_type.items()},
        "status_counts": audit["status_counts"],
        "lost": len(audit["not_terminal"]) + len(audit["unknown"]),
        "stuck": len(audit["running"]),
        "running_in_table": audit["running_in_table"],
        "duplicates": audit["duplicate_result_rows"],
        "result_mismatch": len(audit["result_mismatch"]),
        "wrong_outcome": len(wrong),
        "dup_executions": dup_exec,
        "dead_letters": len(dead),
        "fail_jobs": len(fail_ids),
        "dead_letter_missing": len(missing_dlq),
        "dead_lettered_twice": sum(1 for e in entries if len(dead_distinct.get(e.id, ())) > 1),
        "dead_letter_copies": sum(dead_keys[e.id] - len(dead_distinct[e.id]) for e in entries if e.id in dead_keys),
        "unexpected_dead_letters": len(unexpected_dlq),
        "poison_dead_lettered": poison_dead,
        "poison_written": len(poison),
        "after_poison": len(after_poison),
        "after_poison_done": after_poison_done,
        "latency_calm": latency_summary(calm),
        "latency_faults": latency_summary(faulty),
        "examples": {"lost": (audit["not_terminal"] + audit["unknown"])[:5], "wrong": wrong[:5],
                     "missing_dlq": missing_dlq[:5]},
    }


def say_hostile(h: Dict[str, Any]) -> None:
    say("hostile: %d requests and records in %.0f s; %d/%d hostile shapes refused 4xx; fuzzed args %s; "
        "revoked token 401: %s" % (h["hostile"], h["seconds"], h["refused_4xx"], h["shapes"], h["fuzz"],
                                   h["revoked_401"]))
    q = h["quota"]
    say("hostile: quota %d: filled %d, 429 %s, another user's job ran %s, %d cancelled" % (
        q["quota"], q["filled"], "yes" if q["got_429"] else "NO", "yes" if q["other_ran"] else "NO", q["cancelled"]))
    say("hostile: %d/%d bad records dead-lettered; normal jobs %d (%d wrong), hostile-phase jobs %d (%d wrong); "
        "worker crashes %d, forged log lines %d" % (
            h["records_dead_lettered"], h["records"], h["normal_jobs"], h["normal_wrong"], h["hostile_jobs"],
            h["hostile_wrong"], h["worker_crashes"], h["forged_log_lines"]))
    for problem in h["problems"]:
        say("hostile: PROBLEM %s" % problem)


def fuzz_api(target: Any, examples: int) -> Optional[Dict[str, Any]]:
    from tests.drills.openapi_fuzz import fuzz

    return fuzz(target.url, target.token, max_examples=examples)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drills", description=__doc__.split("\n")[0])
    parser.add_argument("--lab", action="store_true", default=os.environ.get("LAB") == "1",
                        help="drill the running lab (make lab) instead of a local stack (also: LAB=1)")
    parser.add_argument("--jobs", type=int, default=2000, help="accepted jobs at least (default 2000)")
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second (default 20)")
    parser.add_argument("--threads", type=int, default=4, help="submitting threads (default 4)")
    parser.add_argument("--max-seconds", type=float, default=900, help="bound of the load phase")
    parser.add_argument("--recovery-seconds", type=float, default=120, help="bound of each fault's recovery")
    parser.add_argument("--drain-seconds", type=float, default=300, help="bound of the drain")
    parser.add_argument("--fuzz-examples", type=int, default=30,
                        help="schemathesis examples per operation (0: skip the API fuzzing)")
    parser.add_argument("--skip-hostile", action="store_true",
                        help="skip the hostile-input phase (the cluster suite does: the local drills run it on the "
                             "same API code)")
    parser.add_argument("--hostile-fuzz", type=int, default=40,
                        help="fuzzed submissions per job type in the hostile-input phase (default 40)")
    parser.add_argument("--work-dir", help="local stack's files (default: a new temp dir, kept for its logs)")
    args = parser.parse_args(argv)

    if args.lab:
        from fablib import labfile

        target: Any = ClusterTarget() if labfile.load()["topology"] == "cluster" else LabTarget()
    else:
        target = LocalTarget(args.work_dir or tempfile.mkdtemp(prefix="joblab-drill-"))
    t_begin = time.monotonic()
    try:
        target.start()
        where = target.url if args.lab else "%s (logs in %s)" % (target.url, target.stack.work_dir)
        say("target %s: %s, %d partitions" % (target.name, where, target.partitions))
        client = Client(target.url, target.token)
        warm = time.time()
        if probe_recovery(client, Ledger(), target.partitions, warm, 120) is None:
            raise RuntimeError("the stack does not complete jobs on every partition (warm-up, 120 s)")
        say("warm-up: a job on every partition succeeded in %.1f s" % (time.time() - warm))

        if args.skip_hostile:
            hostile = {"ok": True, "hostile": 0, "worker_crashes": 0}
            say("hostile: not run (--skip-hostile)")
        else:
            hostile = HostilePhase(target, fuzz_per_type=args.hostile_fuzz).run()
            say_hostile(hostile)

        poison_at = time.time()
        poison = write_poison(target.bootstrap, target.topics.jobs, target.partitions)
        say("poison: %d undecodable records written straight to %s" % (len(poison), target.topics.jobs))

        ledger = Ledger()
        load = Load(ledger, target.url, target.token, rate=args.rate, threads=args.threads,
                    max_jobs=3 * args.jobs, max_seconds=args.max_seconds)
        hard_deadline = time.monotonic() + args.max_seconds
        load.start()
        say("load: %.0f jobs/s from %d threads until >= %d accepted and every fault is done" % (
            args.rate, args.threads, args.jobs))
        faults = run_faults(target, ledger, load, args.jobs, args.recovery_seconds, hard_deadline)
        while len(ledger) < args.jobs and time.monotonic() < hard_deadline and not load.done():
            time.sleep(0.2)
        load.stop()
        entries = ledger.snapshot()
        say("load: %d accepted, refused: %s; sent again with their Idempotency-Key after a dropped connection: "
            "%s, %d of them answered with the job the first attempt had stored" % (
                len(entries), dict(ledger.refused) or "none", dict(ledger.resent) or "none", ledger.replayed))

        t_drain = time.monotonic()
        audit = drain(target, [e.id for e in entries], args.drain_seconds)
        say("drain: %.1f s" % (time.monotonic() - t_drain))
        queued_after, stranded, waited = wait_stranded(target)
        say("stranded jobs sent by the workers' sweep during the run: %d; queued after the drain: %d; still "
            "queued after %.0f s (the sweep's bound %.0f s): %d" % (
                target.sweep_resends(), queued_after, waited, target.stranded_bound, stranded))
        outbox_left, outbox_wait = wait_outbox(target)
        say("outbox: %d messages left unpublished after %.0f s (a killed worker's wait for their lease)" % (
            outbox_left, outbox_wait))
        max_attempts = int(getattr(target, "max_attempts", 3))
        r = analyse(target, entries, audit, faults, poison, poison_at, max_attempts)

        say("jobs: %s; store: %s" % (r["by_type"], r["status_counts"]))
        say("dead-letter topic: %d records; fail jobs %d, missing there %d, dead-lettered twice %d, "
            "other jobs there %d; identical copies of one produce (Kafka's at-least-once) %d" % (
                r["dead_letters"], r["fail_jobs"], r["dead_letter_missing"], r["dead_lettered_twice"],
                r["unexpected_dead_letters"], r["dead_letter_copies"]))
        say("poison: %d/%d dead-lettered; %d/%d jobs accepted after it finished" % (
            r["poison_dead_lettered"], r["poison_written"], r["after_poison_done"], r["after_poison"]))
        say("e2e latency without faults: %s" % fmt_latency(r["latency_calm"]))
        say("e2e latency during faults:  %s" % fmt_latency(r["latency_faults"]))
        for f in faults:
            say("recovery %-26s %s; refused submits %d" % (
                f["name"], "%.1f s" % f["recovery"] if f["recovery"] is not None else "NONE", f["refused"]))
        # A submit answered 503 names its job: it must have ended `failed` (not enqueued), never
        # be left `queued` or `running` as if it had been accepted.
        refused_states = target.audit(ledger.refused_ids)["jobs"] if ledger.refused_ids else {}
        refused_queued = sorted(i for i, j in refused_states.items() if j["status"] in ("queued", "running"))
        say("refused submits: %d in all, %d with a job id: %s; queued or running among them: %d" % (
            ledger.refused_total(), len(ledger.refused_ids),
            dict(Counter(j["status"] for j in refused_states.values())) or "none", len(refused_queued)))
        if any(r["examples"].values()):
            say("examples: %s" % r["examples"])
        exits = target.process_exits()
        for e in exits:
            say("UNEXPECTED EXIT of %s (pid %s, %s); its log ends:\n%s" % (
                e["process"], e["pid"] or "?", e["code"], "\n".join("    | " + line for line in e["tail"].splitlines())))
        bound = dup_execution_bound(fault_plan(target))
        say("duplicate executions: %d (bound %d: a worker SIGKILL leaves its batch's unconcluded jobs claimed, "
            "%d at most; a rebalance catches one; other faults never re-run a job)"
            % (r["dup_executions"], bound, DEFAULTS["WORKER_BATCH"]))

        fuzz = fuzz_api(target, args.fuzz_examples) if args.fuzz_examples > 0 else None
        if fuzz is not None:
            say("openapi fuzz: %d requests over %d operations, %d server errors, %d run errors %s" % (
                fuzz["requests"], fuzz["operations"], fuzz["server_errors"], len(fuzz["errors"]), fuzz["errors"]))

        unrecovered = sum(1 for f in faults if f["recovery"] is None)
        ok = (r["lost"] == 0 and r["duplicates"] == 0 and r["stuck"] == 0 and r["wrong_outcome"] == 0
              and r["result_mismatch"] == 0 and r["dead_letter_missing"] == 0 and r["unexpected_dead_letters"] == 0
              and r["poison_dead_lettered"] == r["poison_written"] and unrecovered == 0
              and len(faults) == len(fault_plan(target)) and r["accepted"] >= args.jobs
              and (fuzz is None or (fuzz["server_errors"] == 0 and fuzz["requests"] > 0 and not fuzz["errors"]))
              and hostile["ok"] and not exits and r["dup_executions"] <= bound and r["dead_lettered_twice"] == 0
              and (r["dead_letter_copies"] == 0 or getattr(target, "BROKER_FAULTS", False))
              and stranded == 0 and not refused_queued and outbox_left == 0)
        print("drills %s: %s in %.0f s; jobs=%d faults=%d unrecovered=%d dup_executions=%d/%d wrong_outcome=%d "
              "dead_letter_missing=%d dead_lettered_twice=%d poison=%d/%d server_errors=%s hostile=%d "
              "worker_crashes=%d process_exits=%d refused=%d resent=%d refused_queued=%d outbox_left=%d lost=%d duplicates=%d "
              "stuck=%d stranded=%d" % (
                  target.name, "PASS" if ok else "FAIL", time.monotonic() - t_begin, r["accepted"], len(faults),
                  unrecovered, r["dup_executions"], bound, r["wrong_outcome"], r["dead_letter_missing"],
                  r["dead_lettered_twice"],
                  r["poison_dead_lettered"], r["poison_written"], "-" if fuzz is None else fuzz["server_errors"],
                  hostile["hostile"], hostile["worker_crashes"], len(exits), ledger.refused_total(), ledger.resent_total(),
                  len(refused_queued), outbox_left,
                  r["lost"], r["duplicates"], r["stuck"],
                  stranded),
              flush=True)
        return 0 if ok else 1
    except Exception as exc:
        print("drills %s: FAIL: %s" % (target.name, exc), flush=True)
        return 1
    finally:
        target.close()


if __name__ == "__main__":
    sys.exit(main())
