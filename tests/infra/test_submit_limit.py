"""nginx limits POST /v1/jobs per API token (devops/nginx.conf, lab.yml LAB_SUBMIT_RATE/BURST):
a burst from one token beyond rate + burst gets 429 with the app's JSON error body, while another
token's submissions and the same token's reads go through."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

import pytest

from tests.infra.conftest import ROOT

testinfra_hosts = ["ssh://app"]


def new_token(name):
    out = subprocess.run([os.path.join(ROOT, "provision", "host", "lab-user.sh"), name], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tokens():
    return new_token("limit-a"), new_token("limit-b")


def limits(host):
    """(rate per second, burst) as rendered into the running nginx config."""
    conf = host.file("/etc/nginx/nginx.conf").content_string
    rate, unit = re.search(r"zone=joblab_submit:\S+ rate=(\d+)r/([sm]);", conf).groups()
    burst = int(re.search(r"limit_req zone=joblab_submit burst=(\d+) nodelay;", conf).group(1))
    return int(rate) / (60.0 if unit == "m" else 1.0), burst


def curl(token, *args):
    return "curl -s -H %s %s" % (shlex.quote("Authorization: Bearer " + token), " ".join(args))


def test_a_burst_from_one_token_gets_429_json_others_go_through(host, tokens):
    flood, other = tokens
    rate, burst = limits(host)
    # Cheap requests (an empty job is a 400 from the app, nothing queued) fired far faster than
    # the rate from one token: at least 3 x (burst + one second of rate), 64 in flight at once.
    n = 3 * int(burst + rate) + 50
    out_dir = "/tmp/submit-limit"
    host.run("rm -rf %s && mkdir %s" % (out_dir, out_dir))
    burst_run = host.run(curl(flood, "--parallel --parallel-max 64 -X POST -H 'Content-Type: application/json'",
                              "-d '{}'", "-o '%s/#1'" % out_dir, "-w '%{http_code} %{content_type}\\n'",
                              "'http://127.0.0.1/v1/jobs?n=[1-%d]'" % n) + " 2>/dev/null")
    codes = burst_run.stdout.split("\n")
    limited = [line for line in codes if line.startswith("429 ")]
    passed = [line for line in codes if line.startswith("400 ")]
    print("%d POSTs from one token (rate %g/s, burst %d): %d passed to the app, %d answered 429"
          % (n, rate, burst, len(passed), len(limited)))
    assert len(limited) + len(passed) == n, set(codes)
    assert limited and len(passed) >= burst
    assert set(limited) == {"429 application/json"}
    # The body of a 429: the app's error shape.
    bodies = host.run("grep -l '\"status\": 429' %s/* | head -n 1 | xargs cat" % out_dir).stdout
    assert json.loads(bodies) == {"status": 429, "error": "Too Many Requests",
                                  "message": "too many job submissions for this token; retry shortly"}
    # Right after: another token still submits, and the flooding token still reads.
    job = host.run(curl(other, "-o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json'",
                        "-d '{\"type\": \"sum\", \"args\": {\"numbers\": [1, 2]}}'", "http://127.0.0.1/v1/jobs"))
    assert job.stdout == "202"
    read = host.run(curl(flood, "-o /dev/null -w '%{http_code}'", "http://127.0.0.1/v1/jobs?limit=1"))
    assert read.stdout == "200"
    host.run("rm -rf %s" % out_dir)
