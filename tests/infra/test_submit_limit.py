"""nginx limits POST /v1/jobs per API token (devops/nginx.conf, lab.yml LAB_SUBMIT_RATE/BURST):
a burst from one token beyond rate + burst gets 429 with the app's JSON error body, while another
token's submissions and the same token's reads go through."""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess

import pytest

from tests.infra.conftest import LAB, ROOT
from tests.support.httpclient import Client, call

PORT = int(os.environ.get("LAB_HTTP_PORT") or LAB["machines"]["app"]["forwarded_ports"][0]["host"])

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


def post(token, body):
    """POST /v1/jobs through nginx from this host (the lab's forwarded port): (status, type, body)."""
    client = Client("http://127.0.0.1:%d" % PORT, token)
    try:
        status, parsed, headers = client.raw("POST", "/v1/jobs", json.dumps(body).encode())
        return status, headers.get("content-type", ""), parsed
    finally:
        client.close()


def test_a_burst_from_one_token_gets_429_json_others_go_through(host, tokens):
    flood, other = tokens
    rate, burst = limits(host)
    # Cheap requests (an empty job is a 400 from the app, nothing queued) fired far faster than
    # the rate from one token: at least 3 x (burst + one second of rate), 64 in flight at once.
    # From this host, with Python's threads: the app machine's curl may be too old for --parallel
    # (CentOS 6 has 7.19).
    n = 3 * int(burst + rate) + 50
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda _i: post(flood, {}), range(n)))
    limited = [a for a in answers if a[0] == 429]
    passed = [a for a in answers if a[0] == 400]
    print("%d POSTs from one token (rate %g/s, burst %d): %d passed to the app, %d answered 429"
          % (n, rate, burst, len(passed), len(limited)))
    assert len(limited) + len(passed) == n, {a[0] for a in answers}
    assert limited and len(passed) >= burst
    assert {a[1] for a in limited} == {"application/json"}
    # The body of a 429: the app's error shape.
    assert limited[0][2] == {"status": 429, "error": "Too Many Requests",
                                         "message": "too many job submissions for this token; retry shortly"}
    # Right after: another token still submits, and the flooding token still reads.
    assert post(other, {"type": "sum", "args": {"numbers": [1, 2]}})[0] == 202
    assert call("http://127.0.0.1:%d" % PORT, "GET", "/v1/jobs?limit=1", flood)[0] == 200
