"""What the cluster costs on one machine: the single box (`app` + `sidecar`) and the cluster (lb,
app1..N, kafka1..3, db) booted one after the other in the same run, each measured through its
front on 127.0.0.1:$LAB_HTTP_PORT with the same client:

  boot             cold `make lab` (create, provision, smoke)
  idle latency     one `noop` job at a time, submit -> succeeded (p50, p90)
  end to end       8 threads submitting `noop` jobs over HTTP, then until every one is terminal: jobs/s
  deploy           `fab deploy` (the cluster: rolling, node after node)

`make bench-cluster`; `make bench` runs it too unless BENCH_CLUSTER=0. Every loop is bounded. The
machines are destroyed afterwards (a running lab is refused: this run needs both topologies).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from tests.support.figures import latency_summary
from tests.support.httpclient import Client
from tests.support.services import ROOT

FAB = os.path.join(os.path.dirname(sys.executable), "fab")
BASE = "http://127.0.0.1:%s" % (os.environ.get("LAB_HTTP_PORT") or "8080")


def _run(cmd: List[str], log: str, seconds: float, **env: str) -> float:
    start = time.monotonic()
    with open(log, "ab") as out:
        out.write(("\n$ %s %s\n" % (" ".join("%s=%s" % kv for kv in env.items()), " ".join(cmd))).encode())
        out.flush()
        res = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds,
                             env=dict(os.environ, **env))
    if res.returncode != 0:
        raise RuntimeError("%s failed (exit %d); see %s" % (" ".join(cmd), res.returncode, log))
    return time.monotonic() - start


def _token() -> str:
    out = subprocess.run([os.path.join(ROOT, "provision", "host", "lab-user.sh"), "bench"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return out.strip().splitlines()[-1]


def _wait_terminal(client: Client, job_id: str, seconds: float) -> Optional[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status in ("succeeded", "failed"):
            return status
        time.sleep(0.005)
    return None


def idle_latency(token: str, jobs: int = 40) -> Dict[str, float]:
    """One job at a time, submit -> succeeded: latency_summary (milliseconds)."""
    client = Client(BASE, token)
    took = []
    try:
        for _ in range(jobs):
            start = time.monotonic()
            code, body = client.submit("noop", {})
            if code != 202 or _wait_terminal(client, body["id"], 30) != "succeeded":
                raise RuntimeError("idle job not accepted or not succeeded (%s)" % code)
            took.append(time.monotonic() - start)
    finally:
        client.close()
    return latency_summary(took)


def end_to_end(token: str, jobs: int = 800, threads: int = 8) -> Dict[str, Any]:
    """``jobs`` noop jobs from ``threads`` clients, then until each is terminal: jobs/s overall."""
    ids: List[str] = []
    refused = [0]
    lock = threading.Lock()
    per = jobs // threads

    def submit() -> None:
        client = Client(BASE, token)
        try:
            for _ in range(per):
                code, body = client.submit("noop", {})
                with lock:
                    if code == 202:
                        ids.append(body["id"])
                    else:
                        refused[0] += 1
        finally:
            client.close()

    start = time.monotonic()
    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(300)
    submitted = time.monotonic() - start
    client = Client(BASE, token)
    try:
        unfinished = sum(1 for i in ids if _wait_terminal(client, i, 120) is None)
    finally:
        client.close()
    total = time.monotonic() - start
    return {"jobs": len(ids), "refused": refused[0], "unfinished": unfinished,
            "submit_per_s": round(len(ids) / submitted, 1), "jobs_per_s": round(len(ids) / total, 1)}


def measure(topology: str, log: str) -> Dict[str, Any]:
    row: Dict[str, Any] = {"topology": topology}
    try:
        row["boot_s"] = round(_run(["make", "--no-print-directory", "lab"], log, 1800, LAB_TOPOLOGY=topology), 1)
        token = _token()
        idle_latency(token, jobs=5)  # warm
        row["idle"] = idle_latency(token)
        row["e2e"] = end_to_end(token)
        row["deploy_s"] = round(_run([FAB, "deploy"], log, 900), 1)
    finally:
        _run(["make", "--no-print-directory", "lab-destroy"], log, 600)
    return row


def lab_is_up() -> bool:
    """A lab of either topology is up in this checkout (its topology is recorded until lab-destroy)."""
    return os.path.exists(os.path.join(ROOT, ".vagrant", "lab-topology"))


def run(work_dir: str) -> List[Dict[str, Any]]:
    if lab_is_up():
        raise RuntimeError("a lab is running here (.vagrant/lab-topology): make lab-destroy first")
    os.makedirs(work_dir, exist_ok=True)
    log = os.path.join(work_dir, "topology.log")
    return [measure("app", log), measure("cluster", log)]


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["%-9s %8s %10s %10s %12s %12s %9s" % ("topology", "boot s", "idle p50", "idle p90", "submits/s",
                                                    "e2e jobs/s", "deploy s")]
    for r in rows:
        lines.append("%-9s %8.0f %8.0f ms %8.0f ms %12.1f %12.1f %9.0f" % (
            r["topology"], r["boot_s"], r["idle"]["p50"], r["idle"]["p90"], r["e2e"]["submit_per_s"],
            r["e2e"]["jobs_per_s"], r["deploy_s"]))
    if len(rows) == 2:
        a, c = rows
        lines.append("cluster/app: e2e jobs/s %.2fx, idle p50 %.2fx, boot %.2fx, deploy %.2fx" % (
            c["e2e"]["jobs_per_s"] / a["e2e"]["jobs_per_s"], c["idle"]["p50"] / a["idle"]["p50"],
            c["boot_s"] / a["boot_s"], c["deploy_s"] / a["deploy_s"]))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.topology_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "var", "bench"), help="where results go")
    args = parser.parse_args(argv)
    rows = run(os.path.join(args.out, "work", "topology"))
    print(format_table(rows), flush=True)
    with open(os.path.join(args.out, "topology.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    bad = [r["topology"] for r in rows if r["e2e"]["unfinished"] or r["e2e"]["refused"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
