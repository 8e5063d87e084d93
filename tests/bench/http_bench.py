"""The HTTP part of `make bench`: requests per second and latency of the job API with wrk, at a fixed
concurrency, through the production nginx config (devops/nginx.conf) and without it, for both gunicorn
worker classes.

Rows (`run()` returns them, `main()` prints them as a table):
  nginx return 200              nginx alone answering from memory: the ceiling of this machine
  gunicorn direct /healthz      wrk -> gunicorn (no DB, no Kafka): what the WSGI server itself costs
  nginx -> gunicorn /healthz    the same through the proxy: what nginx in front costs
  nginx -> GET /v1/jobs/<id>    authenticated read of one job row from PostgreSQL
  nginx -> POST /v1/jobs        authenticate, INSERT, produce to Kafka and wait for the ack
with each of gunicorn's `sync` and `gevent` worker classes, on a real local stack (Kafka, PostgreSQL,
2 web workers, 1 job worker so submitted jobs drain). GET runs before POST so that the job worker
draining the POSTed backlog does not compete for the CPU during another row.

    .venv/bin/python -m tests.bench.http_bench [--duration S] [--connections C] [--threads T]

Needs wrk and nginx: provision/host/host-deps.sh bench. Nothing touches the system's nginx, ports 80/8080
or any system service: every process here is private, on free loopback ports, under one work dir.
Failed requests are never hidden: wrk's non-2xx count and socket errors (connect/read/write, and
requests slower than WRK_TIMEOUT) are in every row, such rows are marked `!` and main() exits 1.
"""
from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

from fablib import labfile
from tests.support.httpclient import call
from tests.support.services import ROOT, check_running, free_port, http_ok, terminate, wait_until
from tests.support.stack import BENCH_QUOTA, LocalStack

NGINX_TEMPLATE = os.path.join(ROOT, "devops", "nginx.conf")
COMMON_SH = os.path.join(ROOT, "provision", "lib", "common.sh")
WORKER_CLASSES = ("sync", "gevent")
# The 2-core machine's classic setting; the same for both classes so only the class differs.
WEB_WORKERS = 2
JOB = {"type": "sum", "args": {"numbers": [1, 2, 3]}}
# wrk's latency units -> milliseconds.
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
HINT = "run provision/host/host-deps.sh bench"
# wrk drops a request slower than its timeout from the latency histogram (it only counts it as an
# error), which would flatter p99 under overload. 10 s instead of wrk's 2 s: longer than any healthy
# answer, shorter than gunicorn's worker timeout (30 s) and nginx's proxy_read_timeout (35 s).
WRK_TIMEOUT = "10s"


def _tool(name: str) -> str:
    """Absolute path of ``name``; nginx is in /usr/sbin, which a non-root PATH may lack."""
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError("%s not found: %s" % (name, HINT))
    return path


# ------------------------------------------------------------------------------------------- wrk
def parse_wrk(out: str) -> Dict[str, Any]:
    """req/s, p50/p99 in ms, non-2xx responses and socket errors from `wrk --latency` output."""
    def latency_ms(pct: int) -> float:
        m = re.search(r"^\s*%d%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, out, re.M)
        if m is None:
            raise RuntimeError("wrk output has no %d%% latency line:\n%s" % (pct, out))
        return float(m.group(1)) * _UNITS_MS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rps is None:
        raise RuntimeError("wrk output has no Requests/sec line:\n%s" % out)
    # Both lines are printed only when non-zero.
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = {}
    if sock:
        kinds = dict(zip(("connect", "read", "write", "timeout"), (int(n) for n in sock.groups())))
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency_ms(50),
        "p99_ms": latency_ms(99),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(kinds.values()),
        # Which socket errors, e.g. "timeout 4": printed beside a row that has any.
        "error_detail": ", ".join("%s %d" % kv for kv in kinds.items() if kv[1]),
    }


class Wrk:
    """wrk at a fixed thread and connection count, so every row sees the same offered concurrency."""

    def __init__(self, work_dir: str, duration: int, connections: int, threads: int) -> None:
        self.bin = _tool("wrk")
        self.work_dir = work_dir
        self.duration = duration
        self.connections = connections
        self.threads = threads

    def script(self, name: str, method: str, token: str, body: Optional[Dict[str, Any]] = None) -> str:
        """A Lua script setting the method, auth header and JSON body of every request."""
        lines = ['wrk.method = "%s"' % method, 'wrk.headers["Authorization"] = "Bearer %s"' % token]
        if body is not None:
            # A long bracket string: the JSON's quotes need no escaping.
            lines += ['wrk.headers["Content-Type"] = "application/json"',
                      "wrk.body = [==[%s]==]" % json.dumps(body)]
        path = os.path.join(self.work_dir, name + ".lua")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def run(self, url: str, script: Optional[str] = None, warmup: bool = True) -> Dict[str, Any]:
        # A short unmeasured run first: gunicorn workers open their DB pool and Kafka producer,
        # nginx its upstream keep-alive connections, so the measured run sees the steady state.
        if warmup:
            self._wrk(url, script, min(1, self.duration))
        return parse_wrk(self._wrk(url, script, self.duration))

    def _wrk(self, url: str, script: Optional[str], seconds: int) -> str:
        cmd = [self.bin, "--latency", "-t", str(self.threads), "-c", str(self.connections),
               "-d", "%ds" % seconds, "--timeout", WRK_TIMEOUT]
        if script:
            cmd += ["-s", script]
        # Bounded: wrk stops itself after `seconds`; the margin covers slow connection setup.
        proc = subprocess.run(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError("wrk %s exited %d:\n%s" % (url, proc.returncode, proc.stdout))
        return proc.stdout


# ----------------------------------------------------------------------------------------- nginx
def lab_setting(name: str) -> str:
    """A setting of lab.yml's `settings`, or its environment override."""
    return str(labfile.setting(name, labfile.load()["settings"][name]))


def render_nginx_conf(base: str, listen_port: int, upstream_port: int, ceiling_port: int, user: str,
                      temp_paths: List[str]) -> str:
    """devops/nginx.conf rendered by provisioning's own renderer (render_template in
    provision/lib/common.sh), with this run's values: the same proxy settings (headers, timeouts,
    buffering, upstream keep-alive, error pages), with pid, logs and temp dirs under ``base``,
    loopback ports, no access log, plus a `return 200` server for the ceiling row. The path of the
    written file."""
    temps = "".join("\n    %s %s;" % (d, os.path.join(base, d.split("_")[0])) for d in temp_paths)
    ceiling = ("\n    # Added by tests/bench/http_bench.py: nginx alone, the ceiling for every other row.\n"
               "    server {\n        listen 127.0.0.1:%d;\n"
               "        location / {\n            return 200 \"ok\";\n        }\n    }" % ceiling_port)
    values = {
        "NGINX_USER": user,
        "NGINX_PID": os.path.join(base, "nginx.pid"),
        "NGINX_ERROR_LOG": os.path.join(base, "error.log"),
        "NGINX_ACCESS_LOG": "off",  # logging every request would measure the disk, not the proxy
        "LISTEN": "127.0.0.1:%d" % listen_port,
        "UPSTREAM_SERVERS": "server 127.0.0.1:%d;" % upstream_port,
        # The per-token submission limit stays in the path but never binds: wrk POSTs with one
        # token as fast as it can, and the row measures the proxy, not the limiter.
        "SUBMIT_RATE": "100000r/s",
        "SUBMIT_BURST": "100000",
        # The lab's proxy timeouts, as lab.yml sets them.
        "PROXY_CONNECT_TIMEOUT": lab_setting("LAB_PROXY_CONNECT_TIMEOUT"),
        "PROXY_READ_TIMEOUT": lab_setting("LAB_PROXY_READ_TIMEOUT"),
        "HTTP_EXTRA": temps + ceiling,
        # GET /metrics from this host only, as the lab serves it to its own machines.
        "METRICS_ALLOW": "allow 127.0.0.1;",
    }
    conf = os.path.join(base, "nginx.conf")
    owner = "%s:%s" % (pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name)
    # die exits 2 here: render_template's 1 also means "unchanged".
    script = 'set -euo pipefail; source "$1"; shift; die() { echo "$*" >&2; exit 2; }; render_template "$@"'
    run = subprocess.run(["bash", "-c", script, "render", COMMON_SH,
                          NGINX_TEMPLATE, conf, "644", owner] + ["%s=%s" % kv for kv in values.items()],
                         capture_output=True, text=True, timeout=60)
    if run.returncode not in (0, 1) or not os.path.isfile(conf):  # 1: written before, unchanged
        raise RuntimeError("rendering %s failed: %s" % (NGINX_TEMPLATE, run.stderr.strip()))
    return conf


class Nginx:
    """A private nginx (master + workers) with its own prefix dir; repointed by reload (HUP)."""

    def __init__(self, base: str) -> None:
        self.bin = _tool("nginx")
        self.base = base
        self.conf = os.path.join(base, "nginx.conf")
        self.error_log = os.path.join(base, "error.log")
        self.ceiling_port = free_port()
        self.port = free_port()
        for _ in range(10):  # two free_port() calls may, rarely, give the same port
            if self.port != self.ceiling_port:
                break
            self.port = free_port()
        # Workers as the invoking user: they must write the temp dirs under work_dir (maybe 0700).
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def ceiling_url(self) -> str:
        return "http://127.0.0.1:%d/" % self.ceiling_port

    def _cmd(self, *extra: str) -> List[str]:
        # -e: nginx's log before the config is read (Debian's default is stderr, keep it ours anyway).
        return [self.bin, "-p", self.base + "/", "-c", self.conf, "-e", self.error_log, *extra]

    def _temp_paths(self) -> List[str]:
        """*_temp_path directives of the modules this nginx binary has (nginx creates their dirs)."""
        out = subprocess.run([self.bin, "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=10).stdout
        paths = ["client_body_temp_path", "proxy_temp_path"]
        for module in ("fastcgi", "uwsgi", "scgi"):
            if "--without-http_%s_module" % module not in out:
                paths.append("%s_temp_path" % module)
        return paths

    def point_at(self, upstream_port: int) -> None:
        """Proxy to gunicorn on ``upstream_port``: start nginx, or reload it when running."""
        os.makedirs(self.base, exist_ok=True)
        self.conf = render_nginx_conf(self.base, self.port, upstream_port, self.ceiling_port, self.user,
                                      self._temp_paths())
        check = subprocess.run(self._cmd("-t", "-q"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError("nginx -t rejected %s:\n%s" % (self.conf, check.stdout))
        if self.proc is None:
            with open(os.path.join(self.base, "stderr.log"), "ab") as log:
                self.proc = subprocess.Popen(self._cmd("-g", "daemon off;"), stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            wait_until(lambda: self._alive() and http_ok(self.ceiling_port, "/"), 30, "nginx")
        else:
            # New workers with the new upstream; the old ones finish and exit. The previous stack is
            # stopped, so until then /healthz fails (502) and the wait below sees only the new config.
            self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self._alive() and http_ok(self.port, "/healthz"), 30,
                   "nginx -> gunicorn :%d" % upstream_port)

    def _alive(self) -> bool:
        return check_running(self.proc, "nginx", self.error_log)

    def stop(self) -> None:
        terminate(self.proc, 15)  # TERM: fast shutdown of master and workers


# ------------------------------------------------------------------------------------------- run
def _submit_job(base_url: str, token: str) -> str:
    """One POST /v1/jobs; the new job's id (the GET row reads it)."""
    status, body = call(base_url, "POST", "/v1/jobs", token, JOB, timeout=30)
    if status != 202:
        raise RuntimeError("POST /v1/jobs answered %d, expected 202" % status)
    return body["id"]


def _row(name: str, worker_class: Optional[str], result: Dict[str, Any], ceiling_rps: float,
         direct_rps: Optional[float]) -> Dict[str, Any]:
    row = {"name": name, "worker_class": worker_class}
    row.update(result)
    row["vs_ceiling"] = result["rps"] / ceiling_rps if ceiling_rps else None
    row["vs_direct"] = result["rps"] / direct_rps if direct_rps else None
    return row


def run(work_dir: str, duration: int = 10, connections: int = 32, threads: int = 2) -> List[Dict[str, Any]]:
    """Start the stacks and nginx under ``work_dir``, measure every row, stop everything (also on
    errors). Each row: name, worker_class, rps, p50_ms, p99_ms, non2xx, errors (socket errors;
    error_detail names them), vs_ceiling, vs_direct (None for the ceiling and direct rows)."""
    if duration < 1 or threads < 1 or connections < threads:
        raise ValueError("need duration >= 1, threads >= 1 and connections >= threads (wrk's rule)")
    os.makedirs(work_dir, exist_ok=True)
    # Both tools are checked before the slow stack start-up, so a missing one fails at once.
    wrk = Wrk(work_dir, duration, connections, threads)
    nginx = Nginx(os.path.join(work_dir, "nginx"))
    rows: List[Dict[str, Any]] = []
    ceiling = 0.0
    try:
        for wc in WORKER_CLASSES:
            # One stack per class, one after the other: never two stacks sharing the 2 cores.
            with LocalStack(os.path.join(work_dir, "stack-" + wc), store="postgresql", job_workers=1,
                            worker_class=wc, web_workers=WEB_WORKERS, LOG_LEVEL="WARNING",
                            USER_MAX_ACTIVE=BENCH_QUOTA) as stack:
                nginx.point_at(stack.gunicorn.port)
                if not rows:  # the ceiling does not depend on gunicorn: measured once
                    result = wrk.run(nginx.ceiling_url)
                    ceiling = result["rps"]
                    rows.append(_row("nginx return 200", None, result, ceiling, None))
                direct = wrk.run(stack.url + "/healthz")
                rows.append(_row("gunicorn direct /healthz", wc, direct, ceiling, None))

                def add(name: str, url: str, script: Optional[str] = None) -> None:
                    rows.append(_row(name, wc, wrk.run(url, script), ceiling, direct["rps"]))

                add("nginx -> gunicorn /healthz", nginx.url + "/healthz")
                job_id = _submit_job(nginx.url, stack.token)
                add("nginx -> GET /v1/jobs/<id>", "%s/v1/jobs/%s" % (nginx.url, job_id),
                    wrk.script("get-" + wc, "GET", stack.token))
                add("nginx -> POST /v1/jobs", nginx.url + "/v1/jobs",
                    wrk.script("post-" + wc, "POST", stack.token, JOB))
    finally:
        nginx.stop()
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The rows as a fixed-width table; a row with failed requests is marked `!`."""
    def ratio(x: Optional[float]) -> str:
        return "-" if x is None else "%.3g" % x  # 3 significant digits: POST is ~1/1000 of the ceiling

    head = "%-28s %-7s %9s %8s %8s %8s %7s %9s %8s" % (
        "case", "class", "req/s", "p50 ms", "p99 ms", "non-2xx", "errors", "x ceiling", "x direct")
    lines = [head, "-" * len(head)]
    for r in rows:
        bad = "  ! " + (r.get("error_detail") or "non-2xx") if r["non2xx"] or r["errors"] else ""
        lines.append("%-28s %-7s %9.0f %8.2f %8.2f %8d %7d %9s %8s%s" % (
            r["name"], r["worker_class"] or "-", r["rps"], r["p50_ms"], r["p99_ms"], r["non2xx"],
            r["errors"], ratio(r["vs_ceiling"]), ratio(r["vs_direct"]), bad))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.http_bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured row (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections, all rows (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--work-dir", help="keep stacks, nginx config and logs here (default: a temp dir, "
                                       "removed after a clean run)")
    args = ap.parse_args(argv)
    if args.duration < 1 or args.threads < 1 or args.connections < args.threads:
        ap.error("need --duration >= 1, --threads >= 1 and --connections >= --threads")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="joblab-http-bench-")
    print("http bench: wrk -t %d -c %d -d %ds per row; %d gunicorn workers per class; work dir %s"
          % (args.threads, args.connections, args.duration, WEB_WORKERS, work_dir), flush=True)
    try:
        rows = run(work_dir, args.duration, args.connections, args.threads)
    except RuntimeError as exc:
        print("http bench: %s (logs in %s)" % (exc, work_dir), file=sys.stderr)
        return 1
    print(format_table(rows))
    failed = [r for r in rows if r["non2xx"] or r["errors"]]
    if failed:
        print("http bench: %d row(s) with failed requests (marked !); logs in %s" % (len(failed), work_dir),
              file=sys.stderr)
        return 1
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
