"""Probes and process facts: /healthz, /readyz, /v1/info. No authentication (load balancers,
supervisor checks and `fab status` call them)."""
from __future__ import annotations

import os
import resource
from typing import Dict

from flask import current_app

from .. import __version__
from .schemas import HealthSchema, InfoSchema, ReadySchema
from .jsonbody import Blueprint

bp = Blueprint("health", __name__, description="Liveness, readiness and process information")


@bp.route("/healthz", methods=["GET"])
@bp.response(200, HealthSchema)
def get_health():
    """The process is alive (checks nothing else)."""
    return {"status": "ok"}


@bp.route("/readyz", methods=["GET"])
@bp.response(200, ReadySchema)
@bp.alt_response(503, schema=ReadySchema, description="a dependency is down; `checks` says which")
def get_ready():
    """Ready when the database and Kafka both answer now."""
    checks: Dict[str, str] = {}
    try:
        current_app.extensions["joblab_db"].ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["database"] = "unavailable: %s" % exc.__class__.__name__
    try:
        current_app.extensions["joblab_queue"].ping()
        checks["kafka"] = "ok"
    except Exception as exc:
        checks["kafka"] = "unavailable: %s" % (exc.__cause__ or exc).__class__.__name__
    failed = sorted(k for k, v in checks.items() if v != "ok")
    if failed:
        return {"status": "unavailable", "failed": failed, "checks": checks}, 503
    return {"status": "ready", "checks": checks}


def memory_bytes() -> Dict[str, int]:
    """Resident and shared memory of this process (what the seed's `/` page showed), from
    /proc/self/statm on Linux; elsewhere only the peak RSS is known."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as fh:
            _size, resident, shared = (int(x) for x in fh.read().split()[:3])
        return {"rss_bytes": resident * page, "shared_bytes": shared * page}
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"rss_bytes": peak, "shared_bytes": 0}


@bp.route("/v1/info", methods=["GET"])
@bp.response(200, InfoSchema)
def get_info():
    """Version, the serving worker's pid and its memory."""
    info = {"version": __version__, "pid": os.getpid(), "ppid": os.getppid()}
    info.update(memory_bytes())
    return info
