"""The stack as `make run` starts it: gunicorn with devops/gunicorn.conf.py, `python -m worker`,
a user made by `flask --app app users create`, and plain HTTP on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT
from tests.support.httpclient import Client
from tests.support.services import free_port

pytestmark = pytest.mark.integration


def http(method, url, body=None, token=None):
    """(status, headers with lower-case names, JSON) of one request; an error status is a value."""
    parts = urlsplit(url)
    client = Client("%s://%s" % (parts.scheme, parts.netloc), token, timeout=15)
    try:
        status, parsed, headers = client.raw(method, parts.path + ("?" + parts.query if parts.query else ""), None if body is None else json.dumps(body).encode())
    finally:
        client.close()
    if status == 0:
        raise ConnectionError("%s %s: %s" % (method, url, parsed))
    return status, headers, parsed


def scrape(url):
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=15) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def wait_http(url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return http("GET", url)
        except ConnectionError:
            time.sleep(0.2)
    raise AssertionError("%s never answered" % url)


@pytest.mark.parametrize("worker_class, store", [("sync", "sqlite"), ("gevent", "postgresql")])
def test_gunicorn_worker_and_cli_serve_a_job_end_to_end(make_stack, request, tmp_path, worker_class, store):
    if store == "sqlite":
        from app.migrate import upgrade
        db_url = "sqlite:///%s" % (tmp_path / "jobs.sqlite3")
        upgrade(db_url)
    else:
        db_url = request.getfixturevalue("postgres").new_database()
        from app.migrate import upgrade
        upgrade(db_url)
    stack = make_stack(db_url)
    port = free_port()
    env = stack.env()
    env.update(PORT=str(port), GUNICORN_WORKER_CLASS=worker_class, GUNICORN_WORKERS="2", FLASK_APP="app",
               JOBLAB_METRICS_DIR=str(tmp_path / "metrics"))
    bindir = os.path.dirname(sys.executable)

    created = subprocess.run([os.path.join(bindir, "flask"), "users", "create", "carol"], env=env, cwd=ROOT,
                             check=True, capture_output=True, text=True)
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("jl_") and " " not in token

    logs = open(tmp_path / "stack.log", "ab")
    procs = [
        subprocess.Popen([os.path.join(bindir, "gunicorn"), "-c", os.path.join(ROOT, "devops", "gunicorn.conf.py")],
                         env=env, cwd=ROOT, stdout=logs, stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-m", "worker"], env=env, cwd=ROOT, stdout=logs, stderr=subprocess.STDOUT),
    ]
    logs.close()
    base = "http://127.0.0.1:%d" % port
    try:
        assert wait_http(base + "/healthz")[0] == 200
        status, _h, ready = http("GET", base + "/readyz")
        assert status == 200, ready
        status, headers, job = http("POST", base + "/v1/jobs", {"type": "sum", "args": {"numbers": [1, 2, 3]}}, token)
        assert status == 202 and job["status"] == "queued" and headers["location"] == "/v1/jobs/" + job["id"]
        deadline = time.monotonic() + 30
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = http("GET", base + "/v1/jobs/" + job["id"], token=token)[2]
        assert job["status"] == "succeeded"
        assert http("GET", base + "/v1/jobs/%s/result" % job["id"], token=token)[2]["result"] == {"sum": 6}
        status, _h, err = http("POST", base + "/v1/jobs", {"type": "sum", "args": {"numbers": ["x"]}}, token)
        assert status == 400 and "args.numbers.0" in err["fields"]
        assert http("GET", base + "/v1/jobs/" + job["id"], token="jl_wrong")[0] == 401
        info = http("GET", base + "/v1/info")[2]
        assert info["rss_bytes"] > 0 and info["pid"] != procs[0].pid  # served by a worker, not the master
        steps = http("GET", base + "/v1/jobs/%s/events" % job["id"], token=token)[2]["events"]
        assert [e["kind"] for e in steps] == ["submitted", "enqueued", "claimed", "succeeded"]
        assert steps[2]["actor"].endswith(":%d" % procs[1].pid) and steps[2]["offset"] == steps[1]["offset"]
        # Every process's figures in one scrape: the web workers' and the job worker's.
        # The finished count follows the outcome's commit (which the poll above may see first).
        deadline = time.monotonic() + 15
        while True:
            figures = scrape(base + "/metrics")
            if ("joblab_jobs_finished_total", (("outcome", "succeeded"), ("type", "sum"))) in figures:
                break
            assert time.monotonic() < deadline, "the worker's figures never reached /metrics"
            time.sleep(0.2)
        assert figures[("joblab_jobs_submitted_total", (("type", "sum"),))] == 1
        assert figures[("joblab_jobs_finished_total", (("outcome", "succeeded"), ("type", "sum")))] == 1
        assert figures[("joblab_job_run_seconds_count", (("type", "sum"),))] == 1
        assert figures[("joblab_http_requests_total", (("method", "POST"), ("route", "/v1/jobs"), ("status", "202")))] == 1
        assert figures[("joblab_http_requests_total", (("method", "POST"), ("route", "/v1/jobs"), ("status", "400")))] == 1
        assert figures[("joblab_jobs", (("state", "succeeded"), ("type", "sum")))] == 1
        assert figures[("joblab_workers", ())] == 1 and figures[("joblab_kafka_up", ())] == 1
        assert sum(v for (name, _l), v in figures.items() if name == "joblab_consumer_lag") == 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(40) for p in procs]
    assert codes == [0, 0], (tmp_path / "stack.log").read_text()[-3000:]
