"""The tests' one HTTP client for the job API: drills, infra (the lab through nginx), the container,
integration tests and benchmarks. Keep-alive http.client, JSON in and out, an error status as a
value; ``call`` is the one-shot form that raises, as urllib does, for an error status or a
broken connection."""
from __future__ import annotations

import http.client
import json
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

#: What Client.raw gives as the body (status 0) when a keep-alive connection was closed before the
#: request reached the server (gunicorn recycling a worker): safe to send again.
NOT_SENT = ("RemoteDisconnected", "ConnectionResetError", "BrokenPipeError")


class HTTPStatusError(OSError):
    """An error status from ``call`` (an OSError, as urllib's HTTPError is)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__("HTTP %d: %s" % (status, body))
        self.status, self.body = status, body


class Client:
    """One keep-alive HTTP connection (one per thread); reconnects after any transport error."""

    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        self.timeout = timeout
        self.conn: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        """(status, parsed JSON or None). Transport errors come back as status 0 and the error's name."""
        status, parsed, _headers = self.raw(method, path, None if body is None else json.dumps(body).encode())
        return status, parsed

    def raw(self, method: str, path: str, data: Optional[bytes],
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, Dict[str, str]]:
        """Send ``data`` as it is (hostile bodies too): (status, parsed JSON or text, headers)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=data, headers=dict(self.headers, **(headers or {})))
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, exc.__class__.__name__, {}
        answer = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.close()
        try:
            return resp.status, json.loads(raw) if raw else None, answer
        except ValueError:
            return resp.status, raw[:200].decode("utf-8", "replace"), answer

    def submit(self, job_type: str, args: Dict[str, Any]) -> Tuple[int, Any]:
        return self.request("POST", "/v1/jobs", {"type": job_type, "args": args})

    def status(self, job_id: str) -> Optional[str]:
        code, body = self.request("GET", "/v1/jobs/" + job_id)
        return body.get("status") if code == 200 and isinstance(body, dict) else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def call(base_url: str, method: str, path: str, token: Optional[str] = None, body: Any = None,
         timeout: float = 15.0) -> Tuple[int, Any]:
    """One request on its own connection: (status, JSON). A status of 400 or more raises
    HTTPStatusError, a transport failure ConnectionError (both OSError)."""
    client = Client(base_url, token, timeout)
    try:
        status, parsed = client.request(method, path, body)
    finally:
        client.close()
    if status == 0:
        raise ConnectionError("%s %s%s: %s" % (method, base_url, path, parsed))
    if status >= 400:
        raise HTTPStatusError(status, parsed)
    return status, parsed
