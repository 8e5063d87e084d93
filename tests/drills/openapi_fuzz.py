"""Fuzz the live API from its own OpenAPI document with schemathesis, authenticated.

    python -m tests.drills.openapi_fuzz --url http://127.0.0.1:8000 --token jl_... [--max-examples 50]

The last line is the verdict, ``openapi fuzz: N requests over K operations, M server errors``;
exit 1 when M > 0, when schemathesis reports run errors (a dropped connection is no better than a
500) or when nothing was sent (an empty run proves nothing); exit 2 when it could not run at all.
A server error is any 5xx answer, including a documented 503: the stack under test must be healthy.

The schemathesis CLI runs in a subprocess (its import warns, and pytest turns warnings into
errors) with a bounded example count and a hard timeout. The numbers are counted, not estimated:
requests and server errors from the HAR file of every exchange it made, operations and findings
from its JSON run report. The token reaches it through the environment and a temporary config
file, never the command line (``ps`` would show it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

# Only "the server must not fail" by default: the other checks (response schemas, status codes
# in the document, ...) are for `--checks all` runs read by a person.
DEFAULT_CHECKS = "not_a_server_error"
TOKEN_ENV = "JOBLAB_FUZZ_TOKEN"
# OpenAPI-aware auth: the token goes where the document's `bearer` security scheme says, so
# schemathesis also knows which operations are public (/healthz, /readyz, /v1/info).
CONFIG = '[auth.openapi.bearer]\nbearer = "${%s}"\n' % TOKEN_ENV
INSTALL_HINT = "pip install -e '.[test,drills]'"


def schemathesis_bin() -> Optional[str]:
    """The CLI beside this interpreter (the venv's), else on PATH; None when not installed."""
    here = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return here if os.access(here, os.X_OK) else shutil.which("schemathesis")


def fuzz(base_url: str, token: str, max_examples: int = 50, seconds: int = 300,
         checks: str = DEFAULT_CHECKS, seed: Optional[int] = None) -> Dict[str, Any]:
    """One bounded schemathesis run against ``base_url``/openapi.json.

    Returns {"requests", "server_errors", "operations", "failures", "errors", "seed",
    "exit_code"}; raises RuntimeError when schemathesis is missing, overruns ``seconds`` or
    leaves no report (e.g. the document could not be loaded)."""
    exe = schemathesis_bin()
    if exe is None:
        raise RuntimeError("schemathesis is not installed: %s" % INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="joblab-fuzz-") as work:
        config = os.path.join(work, "schemathesis.toml")
        with open(config, "w") as fh:
            fh.write(CONFIG)
        har, report = os.path.join(work, "run.har"), os.path.join(work, "run.json")
        cmd = [exe, "--config-file", config, "run", base_url.rstrip("/") + "/openapi.json",
               "--checks", checks, "--max-examples", str(max_examples),
               "--request-timeout", "30", "--wait-for-schema", "15",
               "--generation-database", "none",  # every run starts fresh: nothing left behind
               "--report", "har,json", "--report-har-path", har, "--report-json-path", report,
               "--no-color"]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        env = dict(os.environ, **{TOKEN_ENV: token})
        try:
            # cwd: schemathesis looks for a schemathesis.toml upwards from there, and this run
            # must not pick one up from the repository.
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=seconds)
        except subprocess.TimeoutExpired:  # run() has killed it already
            raise RuntimeError("schemathesis did not finish within %ds (max_examples=%d)" % (seconds, max_examples))
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if not (os.path.exists(har) and os.path.exists(report)):
            raise RuntimeError("schemathesis exited %d without reports:\n%s" % (proc.returncode, tail))
        with open(har) as fh:
            entries = json.load(fh)["log"]["entries"]
        with open(report) as fh:
            run = json.load(fh)
    if run.get("operations") is None:  # e.g. /openapi.json never loaded: nothing was fuzzed
        raise RuntimeError("schemathesis could not run (exit %d):\n%s" % (proc.returncode, tail))
    statuses = [int(e.get("response", {}).get("status") or 0) for e in entries]
    return {
        "requests": len(entries),
        "server_errors": sum(1 for s in statuses if s >= 500),
        "operations": run["operations"]["tested"],
        "failures": describe(run),
        "errors": ["%s x%s" % (e.get("title", "?"), e.get("count", "?")) for e in run.get("errors", [])],
        "seed": run.get("seed"),
        "exit_code": proc.returncode,
    }


def describe(run: Dict[str, Any]) -> List[str]:
    """One line per kind of finding: "ST108 Response violates schema x12: GET /readyz, ..."."""
    return ["%s %s x%s: %s" % (f.get("code", "?"), f.get("title", f.get("type", "?")), f.get("count", "?"),
                               ", ".join(f.get("operations", [])))
            for f in run.get("failures", [])]


def summary(result: Dict[str, Any]) -> str:
    return "openapi fuzz: %d requests over %d operations, %d server errors" % (
        result["requests"], result["operations"], result["server_errors"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.drills.openapi_fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL of the API, e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                    help="bearer token (default: $%s)" % TOKEN_ENV)
    ap.add_argument("--max-examples", type=int, default=50, help="test cases per operation and phase")
    ap.add_argument("--seconds", type=int, default=300, help="hard limit for the whole run")
    ap.add_argument("--checks", default=DEFAULT_CHECKS, help="schemathesis checks, e.g. all")
    ap.add_argument("--seed", type=int, help="reproduce an earlier run")
    args = ap.parse_args(argv)
    if not args.token:
        ap.error("--token or $%s is required" % TOKEN_ENV)
    try:
        result = fuzz(args.url, args.token, args.max_examples, args.seconds, args.checks, args.seed)
    except RuntimeError as exc:
        print("openapi fuzz: %s" % exc, file=sys.stderr)
        return 2
    for line in result["failures"] + result["errors"]:
        print("  " + line)
    print("  seed %s" % result["seed"])
    print(summary(result))
    # Run errors (e.g. a connection dropped mid-request) fail the drill like a 5xx does.
    return 1 if result["server_errors"] or result["errors"] or not result["requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
