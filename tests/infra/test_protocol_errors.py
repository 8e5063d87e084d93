"""Requests broken at the HTTP level, sent raw to the lab's front (nginx, through the host's
forwarded port): each gets the API's JSON error shape with the status it names, never an HTML
page, a 500 or a dropped connection, and the API answers normally afterwards. Requests that nginx
lets through (many headers, long but legal lines) must reach the app, not gunicorn's own
plain-text limits (devops/gunicorn.conf.py sets those above nginx's)."""
from __future__ import annotations

import json
import socket
from typing import Tuple

import pytest

from tests.infra.conftest import http_port

testinfra_hosts = ["ssh://app"]

HOST = b"Host: 127.0.0.1\r\n"
CLOSE = b"Connection: close\r\n"


def get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"".join(headers) + CLOSE + b"\r\n"


def exchange(raw: bytes) -> Tuple[int, str, bytes]:
    """Send ``raw`` on a new connection, read to EOF (bounded): (status, content type, body)."""
    with socket.create_connection(("127.0.0.1", http_port()), timeout=15) as conn:
        # No half-close after sending: nginx takes that for a client that went away (499) on a
        # request it proxies. Every request here says Connection: close, or is one nginx refuses.
        try:
            conn.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):  # refused before all of it was sent
            pass
        data = b""
        while len(data) < 1 << 20:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), "no HTTP answer: %r" % data[:200]
    ctype = next((ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), ctype, body


#: (name, raw request, status the client must get, text its message must contain). Refused by
#: nginx itself: the message is nginx's, not the app's (the app answers its own 413 above 64 KiB).
REFUSED = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400, "could not parse"),
    ("TLS handshake on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400,
     "could not parse"),
    ("request line over 8 KiB", get(b"/v1/jobs/" + b"a" * 9000), 414, "proxy limit"),
    ("one header line over 8 KiB", get(b"/healthz", b"X-Pad: " + b"a" * 10000 + b"\r\n"), 400, "proxy limit"),
    ("headers over 32 KiB in all", get(b"/healthz", *[b"X-Pad-%d: %s\r\n" % (i, b"a" * 7000) for i in range(6)]), 400,
     "proxy limit"),
    ("no Host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n", 400, "could not parse"),
    ("two Host headers", get(b"/healthz", HOST), 400, "could not parse"),
    ("bad chunk size", b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n" + CLOSE
     + b"\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "could not parse"),
    ("unknown transfer coding", b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n" + CLOSE
     + b"\r\n", 501, "transfer encoding"),
    ("HTTP/3.0 in the request line", b"GET /healthz HTTP/3.0\r\n" + HOST + CLOSE + b"\r\n", 505, "HTTP version"),
    ("chunked body over 128 KiB", b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
     + CLOSE + b"\r\n" + (b"8000\r\n" + b"a" * 0x8000 + b"\r\n") * 5 + b"0\r\n\r\n", 413, "proxy limit"),
    ("an error page asked for directly", get(b"/_joblab/error/500"), 404, "no such resource"),
]


def json_error(name, got, ctype, body, status):
    """The API's error shape with ``status``: its parsed body."""
    assert got == status, (name, got, body[:200])
    assert ctype.startswith("application/json"), (name, ctype, body[:200])
    answer = json.loads(body)
    assert answer["status"] == status and answer["error"] and answer["message"], answer
    return answer


@pytest.mark.parametrize("name,raw,status,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_nginx_refuses_with_the_apis_json_error(name, raw, status, says):
    assert says in json_error(name, *exchange(raw), status)["message"]


def test_content_length_and_chunked_together_is_refused_in_json():
    """nginx 1.21.1+ refuses the pair itself (400); older nginx (nginx.org's 1.16 for CentOS 6)
    reads the body as chunked and passes a clean request on, which the app refuses: no token."""
    raw = (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n" + CLOSE
           + b"\r\n0\r\n\r\n")
    got, ctype, body = exchange(raw)
    json_error("Content-Length and chunked", got, ctype, body, 400 if got == 400 else 401)


#: Legal requests near nginx's limits: nginx passes them, and the app (not gunicorn) answers.
PASSED = [
    ("150 headers", get(b"/healthz", *[b"X-H%d: v\r\n" % i for i in range(150)]), 200),
    ("a 7 KiB header line", get(b"/healthz", b"X-Pad: " + b"a" * 7000 + b"\r\n"), 200),
    ("a 7 KiB request line", get(b"/v1/jobs/" + b"a" * 7000), 401),
    ("a 7 KiB header on a submit without a token",
     b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"X-Pad: " + b"a" * 7000 + b"\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\n" + CLOSE + b"\r\n{}", 401),
]


@pytest.mark.parametrize("name,raw,status", PASSED, ids=[r[0] for r in PASSED])
def test_requests_nginx_passes_reach_the_app(name, raw, status):
    got, ctype, body = exchange(raw)
    assert got == status and ctype.startswith("application/json"), (name, got, ctype, body[:200])
    assert json.loads(body)


def test_the_api_answers_after_them(host):
    got, _ctype, body = exchange(get(b"/healthz"))
    assert got == 200 and json.loads(body)["status"] == "ok"
    assert host.run("pgrep -f joblab-gunicorn").rc == 0
