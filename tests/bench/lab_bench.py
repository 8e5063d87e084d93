"""The lab part of `make bench`: how long the lab's own operations take on this machine.

  cold make lab      no lab machines (base image and artifact cache kept): create + provision + smoke
  warm make lab      the same command on the running lab: re-provision (nothing to do) + smoke
  no-op re-provision `vagrant provision` on the running lab
  fab deploy         build the wheel, ship it, switch the release, USR2 reload, health checks

The lab is left as it was found: running if it was running before, destroyed otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Dict, List

from tests.support.services import ROOT

FAB = os.path.join(os.path.dirname(sys.executable), "fab")


def _timed(name: str, cmd: List[str], log: str, seconds: float) -> Dict[str, Any]:
    start = time.monotonic()
    with open(log, "ab") as out:
        out.write(("\n$ %s\n" % " ".join(cmd)).encode())
        out.flush()
        res = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise RuntimeError("%s failed (exit %d); see %s" % (" ".join(cmd), res.returncode, log))
    return {"name": name, "seconds": round(took, 1)}


def lab_running() -> bool:
    res = subprocess.run(["vagrant", "status", "--machine-readable"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    states = [line.split(",")[3] for line in res.stdout.splitlines() if ",state," in line]
    return bool(states) and all(s == "running" for s in states)


def run(work_dir: str) -> List[Dict[str, Any]]:
    log = os.path.join(work_dir, "lab.log")
    was_running = lab_running()
    rows: List[Dict[str, Any]] = []
    try:
        subprocess.run(["make", "--no-print-directory", "lab-destroy"], cwd=ROOT, stdout=subprocess.DEVNULL,
                       timeout=300, check=True)
        rows.append(_timed("cold make lab", ["make", "--no-print-directory", "lab"], log, 1800))
        rows.append(_timed("warm make lab", ["make", "--no-print-directory", "lab"], log, 900))
        rows.append(_timed("no-op re-provision", ["vagrant", "provision"], log, 900))
        rows.append(_timed("fab deploy", [FAB, "deploy"], log, 900))
    finally:
        if not was_running:
            subprocess.run(["make", "--no-print-directory", "lab-destroy"], cwd=ROOT, stdout=subprocess.DEVNULL,
                           timeout=300)
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["%-22s %9s" % ("lab operation", "seconds")]
    lines += ["%-22s %9.1f" % (r["name"], r["seconds"]) for r in rows]
    return "\n".join(lines)
