"""/v1/jobs: poll, list, fetch results, cancel (submitting: app/api/submit.py, same blueprint).
Every route sees only the caller's jobs: another user's job id answers exactly like an unknown
one (404)."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Dict, Optional

from flask import current_app, g

from .. import store
from ..messages import JOB_ID_PATTERN
from ..states import JobStatus
from ..store import jobs as job_store
from .auth import require_user
from .errors import api_abort
from ..store import history
from .schemas import JobEventsSchema, JobListQuerySchema, JobListSchema, JobResultSchema, JobSchema
from .jsonbody import Blueprint

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Submit jobs and read their results")
bp.before_request(require_user)

# Documents, on each route, what require_user enforces for the whole blueprint.
authenticated = bp.doc(security=[{"bearer": []}], responses={"401": {"description": "missing or invalid bearer token"}})


def _iso(value: Optional[datetime]) -> Optional[str]:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def job_json(row: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "status": row["status"].value,
        "attempts": row["attempts"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "error": row["error"],
        "cancel_requested_at": _iso(row.get("cancel_requested_at")),
    }


def event_json(row: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "at": _iso(row["at"]),
        "kind": row["kind"],
        "attempt": row["attempt"],
        "actor": row["actor"],
        "topic": row["kafka_topic"],
        "partition": row["kafka_partition"],
        "offset": row["kafka_offset"],
        "detail": row["detail"],
    }


def _db() -> "store.Database":
    return current_app.extensions["joblab_db"]


def _known_shape_or_404(job_id: str) -> None:
    # Not a job id at all (a NUL byte, 10 kB...): no such job, without asking the store (PostgreSQL
    # refuses NUL in text with an error that is not a 404).
    if not JOB_ID_PATTERN.fullmatch(job_id):
        api_abort(404, "no job %r" % job_id[:64])


def _own_job_or_404(job_id: str) -> Dict[str, Any]:
    _known_shape_or_404(job_id)
    row = job_store.get_job(_db().engine, job_id, user_id=g.user_id)
    if row is None:
        api_abort(404, "no job %s" % job_id)
    return row


@bp.route("", methods=["GET"])
@authenticated
@bp.arguments(JobListQuerySchema(), location="query", error_status_code=400)
@bp.response(200, JobListSchema)
def list_jobs(query: Dict[str, Any]):
    """The caller's jobs, newest first; follow `next_cursor` for the next page."""
    cfg = current_app.config
    limit = query.get("limit", cfg["PAGE_SIZE"])
    if limit > cfg["PAGE_SIZE_MAX"]:
        most = "Must be at most %d." % cfg["PAGE_SIZE_MAX"]
        api_abort(400, "limit: " + most, fields={"limit": [most]})
    before = int(query["cursor"]) if "cursor" in query else None  # digits: checked by the schema
    rows, next_seq = job_store.list_jobs(_db().engine, g.user_id, limit, query.get("status"), before)
    return {"jobs": [job_json(r) for r in rows], "next_cursor": None if next_seq is None else str(next_seq)}


@bp.route("/<job_id>", methods=["GET"])
@authenticated
@bp.response(200, JobSchema)
def get_job(job_id: str):
    """A job's state."""
    return job_json(_own_job_or_404(job_id))


@bp.route("/<job_id>/result", methods=["GET"])
@authenticated
@bp.response(200, JobResultSchema)
@bp.alt_response(409, description="the job has not succeeded (yet)")
def get_job_result(job_id: str):
    """The result, once the job has succeeded (409 before)."""
    row = _own_job_or_404(job_id)
    if row["status"] is not JobStatus.SUCCEEDED:
        api_abort(409, "job %s is %s; a result exists only once it has succeeded" % (job_id, row["status"].value),
                  job_status=row["status"].value)
    return {"id": job_id, "result": job_store.get_result(_db().engine, job_id)}


@bp.route("/<job_id>/events", methods=["GET"])
@authenticated
@bp.response(200, JobEventsSchema)
def get_job_events(job_id: str):
    """The job's history, oldest first: each step of its life, kept in the store (it survives
    restarts). Written in the same transaction as the state change it records."""
    _own_job_or_404(job_id)
    return {"id": job_id, "events": [event_json(e) for e in history.events_of(_db().engine, job_id)]}


@bp.route("/<job_id>/cancel", methods=["POST"])
@authenticated
@bp.response(200, JobSchema)
@bp.alt_response(202, schema=JobSchema, description="the job is running: the cancel is recorded; the job may see it, "
                 "and its attempt ends `cancelled` when its run ends (its type's timeout ends it at the latest)")
@bp.alt_response(409, description="the job has finished (or its cancel was asked for already)")
def cancel_job(job_id: str):
    """Cancel a job: a queued one at once (200, `cancelled`; the worker skips it), a running one
    when its run ends (202, still `running` with `cancel_requested_at` set)."""
    _known_shape_or_404(job_id)
    row, done = job_store.cancel_job(_db().engine, job_id, g.user_id, actor=g.user_name)
    if row is None:
        api_abort(404, "no job %s" % job_id)
    if not done:
        api_abort(409, "job %s is %s; only queued or running jobs can be cancelled (once)" % (
            job_id, row["status"].value), job_status=row["status"].value)
    if done == "requested":
        log.info("job %s: cancel requested while it runs (by %r)", job_id, g.user_name)
        return job_json(row), 202
    log.info("job %s: queued -> cancelled", job_id)
    return job_json(row)
