"""Submitting jobs: POST /v1/jobs (one) and POST /v1/jobs/batch (up to BATCH_MAX), on the jobs
blueprint. A 2xx means the rows are committed and Kafka acknowledged their messages; an
Idempotency-Key makes a retried submit return the jobs the first one made."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

from flask import current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..jobqueue import QueueUnavailable
from ..messages import encode_job
from ..states import JobStatus
from ..store import jobs as job_store
from ..store.users import utcnow
from .errors import api_abort
from .jobs import _db, authenticated, bp, job_json
from .schemas import JobBatchResultSchema, JobBatchSchema, JobCreateSchema, JobSchema

log = logging.getLogger(__name__)

SUBMIT_ENDPOINTS = ("jobs.create_job", "jobs.create_jobs_batch")

#: Documented on both routes.
IDEMPOTENCY = {"parameters": [{
    "in": "header", "name": "Idempotency-Key", "required": False, "schema": {"type": "string", "maxLength": 255},
    "description": "a retry with the same key (and the same body, within 24 h) returns the jobs the first "
                   "request made, with `Idempotent-Replayed: true` and the first answer's status, instead of "
                   "making new ones; after a 503 (Kafka took none of them) the key is free again"}]}


@bp.before_request
def require_json_body() -> None:
    # 415 before parsing: webargs would otherwise report a non-JSON body as "missing fields".
    if request.method == "POST" and request.endpoint in SUBMIT_ENDPOINTS and not request.is_json:
        api_abort(415, "request body must be JSON (Content-Type: application/json)")


def _idempotency_key() -> Optional[str]:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        problem = "1 to 255 printable ASCII characters."
        api_abort(400, "Idempotency-Key: " + problem, fields={"Idempotency-Key": [problem]})
    return key


def _fingerprint(body: Any) -> str:
    """The request as the key remembers it: a retry has the same, another request not."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _over_quota(exc: job_store.QuotaExceeded) -> None:
    log.info("user %r: over quota (%d jobs queued or running)", g.user_name, exc.active)
    api_abort(429, "you have %d jobs queued or running, the most allowed; try again when some have finished"
              % exc.active, headers={"Retry-After": str(int(current_app.config["QUOTA_RETRY_AFTER"]))},
              active=exc.active)


def _create(specs: List[Tuple[str, Dict[str, Any]]], body: Any) -> Tuple[List[Dict[str, Any]], bool]:
    """The rows, committed (or, for a replayed Idempotency-Key, those of the first request)."""
    engine, cfg = _db().engine, current_app.config
    max_active = int(cfg["USER_MAX_ACTIVE"]) or None
    key = _idempotency_key()
    try:
        if key is None and len(specs) == 1:  # the common case: one statement, quota included
            return [job_store.create_job(engine, g.user_id, specs[0][0], specs[0][1], max_active)], False
        return job_store.create_jobs(engine, g.user_id, specs, max_active, key, _fingerprint(body))
    except job_store.QuotaExceeded as exc:
        _over_quota(exc)
    except job_store.KeyReused:
        problem = "already used for a different request."
        api_abort(422, "Idempotency-Key: " + problem, fields={"Idempotency-Key": [problem]})
    raise AssertionError("unreachable")


def _not_enqueued(row: Dict[str, Any], reason: str) -> bool:
    """Kafka did not take the job: it must not stay looking queued. False if it could not be
    marked (the store failed too): then it stays queued and runs once the sweep sends it."""
    log.error("job %s: enqueue failed: %s", row["id"], reason)
    try:
        job_store.mark_enqueue_failed(_db().engine, row["id"], reason)
    except SQLAlchemyError as exc:
        # The row is left queued with no message: the workers' sweep (worker/sweep.py) sends it
        # once it is clearly stranded. The 503 says so (its `id` can be looked up).
        log.error("job %s: marking it failed failed too (%s); the sweep will send it later", row["id"],
                  exc.__class__.__name__)
        return False
    return True


def _free_key(rows: List[Dict[str, Any]]) -> None:
    """None of a keyed request's jobs was taken by Kafka (the answer is 503, "try again"): its key
    is freed, so that trying again with the same key submits again rather than replaying the 503.
    If the store cannot free it now, a replay answers 503 as well (below)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return
    try:
        job_store.forget_key(_db().engine, g.user_id, key, [r["id"] for r in rows])
    except SQLAlchemyError as exc:
        log.error("idempotency key of jobs %s not freed (%s)", [r["id"] for r in rows], exc.__class__.__name__)


def _replayed_status(rows: List[Dict[str, Any]]) -> int:
    """A replay answers as the first request did: 503 when Kafka took none of its jobs, 207 when
    it took some (the others `failed`, not enqueued), else 202."""
    refused = sum(1 for r in rows if job_store.not_enqueued(r))
    return 202 if not refused else 503 if refused == len(rows) else 207


def _enqueued(rows: List[Dict[str, Any]]) -> None:
    """Kafka has these jobs' messages: counted. (Their `enqueued` step is written by the worker's
    claim, from the record itself: app/store/jobs.py _claimed_steps.)"""
    def count() -> None:
        submitted = metrics.web().submitted
        for row in rows:
            submitted.labels(row["type"]).inc()

    metrics.safely(count)


@bp.route("", methods=["POST"])
@authenticated
@bp.doc(**IDEMPOTENCY)
# A valid body: API readers and fuzzers (schemathesis' examples phase) start from it. The schema
# is an instance (they hold no state): given the class, webargs builds one per request (~4 % of a
# submit's CPU).
@bp.arguments(JobCreateSchema(), error_status_code=400, example={"type": "sum", "args": {"numbers": [1, 2, 3]}})
@bp.response(202, JobSchema)
@bp.alt_response(400, description="invalid body (bad JSON, nested deeper than MAX_JSON_DEPTH, a field out of "
                                   "its bounds); `fields` names each problem")
@bp.alt_response(413, description="body larger than MAX_CONTENT_LENGTH (64 KiB by default)")
@bp.alt_response(422, description="the Idempotency-Key was used for a different request")
@bp.alt_response(429, description="the caller already has USER_MAX_ACTIVE jobs (1000 by default) queued or "
                                   "running; nothing was stored. `Retry-After` says when to try again")
@bp.alt_response(503, description="Kafka did not take the job: it is `failed` (or, if even that could not be "
                                   "recorded, the message says the sweep will send it later)")
def create_job(body: Dict[str, Any]):
    """Submit a job: recorded in the database, then on Kafka (acks=all), then 202.

    Each type's `args` and their bounds are in the `*Args` schemas (e.g. `sum`: at most 1000
    numbers, each within ±2^53)."""
    rows, replayed = _create([(body["type"], body["args"])], body)
    row = rows[0]
    headers = {"Location": "/v1/jobs/%s" % row["id"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
        if _replayed_status(rows) == 503:
            api_abort(503, "job queue unavailable, job not accepted; try again later", headers=headers, id=row["id"])
        return job_json(row), 202, headers
    queue = current_app.extensions["joblab_queue"]
    try:
        queue.send(queue.topics.jobs, row["id"], encode_job(row["id"], row["type"], row["args"]))
    except QueueUnavailable as exc:
        if _not_enqueued(row, str(exc)):
            _free_key(rows)
            api_abort(503, "job queue unavailable, job not accepted; try again later", id=row["id"])
        api_abort(503, "job queue unavailable; the job is recorded and will run once a worker finds it "
                  "stranded (GET /v1/jobs/%s says when)" % row["id"], id=row["id"])
    _enqueued([row])
    log.info("job %s: queued (%s) for user %r", row["id"], row["type"], g.user_name)
    return job_json(row), 202, headers


@bp.route("/batch", methods=["POST"])
@authenticated
@bp.doc(**IDEMPOTENCY)
@bp.arguments(JobBatchSchema(), error_status_code=400,
              example={"jobs": [{"type": "sum", "args": {"numbers": [1, 2]}}, {"type": "noop", "args": {}}]})
@bp.response(202, JobBatchResultSchema)
@bp.alt_response(207, schema=JobBatchResultSchema,
                 description="some jobs were not taken by Kafka: those are `failed` (`error` says why), the others queued")
@bp.alt_response(400, description="an invalid job (`fields` names it: jobs.<index>.<field>), or more than "
                                   "BATCH_MAX jobs (500 by default); nothing was stored")
@bp.alt_response(413, description="body larger than MAX_CONTENT_LENGTH")
@bp.alt_response(422, description="the Idempotency-Key was used for a different request")
@bp.alt_response(429, description="the jobs would take the caller past USER_MAX_ACTIVE; nothing was stored")
@bp.alt_response(503, schema=JobBatchResultSchema, description="Kafka took none of the jobs; all are `failed`")
def create_jobs_batch(body: Dict[str, Any]):
    """Submit many jobs at once: validated all or none, recorded in ONE transaction, sent to Kafka
    together (one flush); per job, `queued`, or `failed` if Kafka did not take it."""
    items = body["jobs"]
    most = int(current_app.config["BATCH_MAX"])
    if len(items) > most:
        problem = "At most %d jobs per batch." % most
        api_abort(400, "jobs: " + problem, fields={"jobs": [problem]})
    rows, replayed = _create([(j["type"], j["args"]) for j in items], body)
    if replayed:
        return {"jobs": [job_json(r) for r in rows]}, _replayed_status(rows), {"Idempotent-Replayed": "true"}
    queue = current_app.extensions["joblab_queue"]
    errors = queue.send_many(queue.topics.jobs, [(r["id"], encode_job(r["id"], r["type"], r["args"])) for r in rows])
    _enqueued([r for r, error in zip(rows, errors) if error is None])
    marked = True  # every job Kafka refused is recorded as such (else the sweep sends it later)
    for row, error in zip(rows, errors):
        if error is not None:
            marked = _not_enqueued(row, error) and marked
            row.update(status=JobStatus.FAILED, error=job_store.NOT_ENQUEUED + error, finished_at=utcnow())
    failed = sum(1 for e in errors if e is not None)
    log.info("batch of %d jobs for user %r: %d queued, %d not enqueued", len(rows), g.user_name,
             len(rows) - failed, failed)
    status = 202 if not failed else 503 if failed == len(rows) else 207
    if status == 503 and marked:
        _free_key(rows)
    return {"jobs": [job_json(r) for r in rows]}, status
