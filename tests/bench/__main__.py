"""`make bench`: one run, all on loopback — HTTP (wrk), pipeline (ours vs Celery + Redis), lab
timings — printed as tables, saved as JSON and Markdown, drawn as a PNG chart.

    .venv-bench/bin/python -m tests.bench [--out var/bench] [--skip-lab] [--jobs 5000] [--duration 10]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from tests.bench import chart, http_bench, lab_bench, pipeline_bench, topology_bench
from tests.support.services import ROOT


def machine() -> str:
    """CPU model, cores, memory and OS: what the figures were measured on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
        with open("/proc/meminfo") as fh:
            mem_kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    osname = platform.platform()
    if os.path.exists("/etc/debian_version"):
        with open("/etc/debian_version") as fh:
            osname = "Debian %s" % fh.read().strip()
    return "%s, %d cores, %.0f GiB, %s, Python %s" % (model, os.cpu_count() or 0, mem_kb / 1048576.0, osname,
                                                       platform.python_version())


def markdown(http: List[Dict[str, Any]], pipeline: List[Dict[str, Any]], lab: List[Dict[str, Any]],
             where: str, duration: int, connections: int) -> str:
    out = ["Measured %s on %s." % (time.strftime("%Y-%m-%d"), where), ""]
    out += ["HTTP — wrk, %d connections, %d s per case; 2 gunicorn workers; PostgreSQL + Kafka on loopback:" % (
        connections, duration), "",
            "| case | worker class | req/s | p50 ms | p99 ms | non-2xx | × ceiling | × direct gunicorn |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in http:
        out.append("| %s | %s | %.0f | %.2f | %.2f | %d | %s | %s |" % (
            r["name"], r["worker_class"] or "–", r["rps"], r["p50_ms"], r["p99_ms"], r["non2xx"] + r["errors"],
            "%.3g" % r["vs_ceiling"], "–" if r["vs_direct"] is None else "%.3g" % r["vs_direct"]))
    if pipeline:
        out += ["", "Pipeline — jobs end to end, submit → succeeded, %d job workers each, 8 submitting threads "
                "(ours: gunicorn → PostgreSQL + Kafka → workers → PostgreSQL; Celery: Flask under the same gunicorn "
                "config → `delay()` → Redis → workers, or `delay()` direct; see tests/bench/pipeline_bench.py):"
                % pipeline[0]["workers"], ""]
        out += pipeline_bench.markdown(pipeline)
    if lab:
        out += ["", "| lab operation | seconds |", "|---|---:|"]
        out += ["| %s | %.0f |" % (r["name"], r["seconds"]) for r in lab]
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "var", "bench"), help="where results go")
    parser.add_argument("--duration", type=int, default=10, help="seconds per HTTP case (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per pipeline row (default 5000)")
    parser.add_argument("--bulk-jobs", type=int, default=20000, help="jobs of the bulk row (default 20000)")
    parser.add_argument("--worker-class", default="gevent", help="gunicorn worker class of the pipeline's fronts")
    parser.add_argument("--warmup-seconds", type=float, default=pipeline_bench.WARMUP_SECONDS,
                        help="noop load each pipeline stack runs before it is measured (default %(default)s)")
    parser.add_argument("--skip-lab", action="store_true", default=os.environ.get("BENCH_LAB") == "0",
                        help="skip the lab timings (also: BENCH_LAB=0)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    where = machine()
    print("bench: %s" % where, flush=True)

    t0 = time.monotonic()
    http = http_bench.run(os.path.join(work, "http"), duration=args.duration, connections=args.connections)
    print(http_bench.format_table(http), flush=True)
    pipeline = pipeline_bench.run(os.path.join(work, "pipeline"), jobs=args.jobs, bulk_jobs=args.bulk_jobs,
                                  worker_class=args.worker_class, warmup_seconds=args.warmup_seconds)
    print(pipeline_bench.format_table(pipeline), flush=True)
    lab: List[Dict[str, Any]] = []
    if not args.skip_lab:
        os.makedirs(os.path.join(work, "lab"), exist_ok=True)
        lab = lab_bench.run(os.path.join(work, "lab"))
        print(lab_bench.format_table(lab), flush=True)
    topology: List[Dict[str, Any]] = []
    if not args.skip_lab and os.environ.get("BENCH_CLUSTER") != "0":
        if topology_bench.lab_is_up():
            print("bench: topology rows skipped: a lab is running here (make lab-destroy, or BENCH_CLUSTER=0)",
                  flush=True)
        else:
            topology = topology_bench.run(os.path.join(work, "topology"))
            print(topology_bench.format_table(topology), flush=True)

    results = {"machine": where, "http": http, "pipeline": pipeline, "lab": lab, "topology": topology,
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip()}
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(markdown(http, pipeline, lab, where, args.duration, args.connections))
    png = os.path.join(args.out, "bench.png")
    chart.draw(png, http, pipeline, where)
    failed = [r["name"] for r in http if r["non2xx"] or r["errors"]]
    print("bench: done in %.0f s; %s, %s, %s%s" % (
        time.monotonic() - t0, os.path.join(args.out, "results.md"), os.path.join(args.out, "results.json"), png,
        "; FAILED requests in: %s" % ", ".join(failed) if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
