"""Request and response schemas; flask-smorest turns them into /openapi.json."""
from __future__ import annotations

from typing import Any, Dict

from marshmallow import INCLUDE, Schema, ValidationError, fields, post_load
from marshmallow.validate import Length, OneOf, Range, Regexp

from ..jobtypes import REGISTRY
from ..states import JobStatus


def _known_type(value: str) -> None:
    if value not in REGISTRY:
        raise ValidationError("Unknown job type; one of: %s." % ", ".join(sorted(REGISTRY)))


class JobCreateSchema(Schema):
    """POST /v1/jobs body. Unknown keys are rejected (marshmallow's RAISE default)."""

    # The enum documents the types registered at import (all of app/jobtypes.py); validation asks
    # REGISTRY itself, so it can never disagree with the worker.
    type = fields.String(required=True, validate=_known_type,
                         metadata={"description": "job type, e.g. sum", "enum": sorted(REGISTRY)})
    args = fields.Dict(
        keys=fields.String(), required=True,
        metadata={
            "description": "arguments of the job type, checked against that type's *Args schema (bounds included)",
            # The schemas themselves are registered by register_job_type_schemas().
            "anyOf": [{"$ref": "#/components/schemas/%s" % jt.schema.__name__} for _n, jt in sorted(REGISTRY.items())],
        },
    )

    @post_load
    def _load_args(self, data: Dict[str, Any], **_kw: Any) -> Dict[str, Any]:
        # Runs once the fields are valid (a known type): the args checked and loaded in one pass.
        try:
            data["args"] = REGISTRY[data["type"]].load_args(data["args"])
        except ValidationError as exc:
            raise ValidationError({"args": exc.messages}) from exc
        return data


class JobBatchSchema(Schema):
    """POST /v1/jobs/batch body: jobs as POST /v1/jobs takes them, at most BATCH_MAX (a setting)."""

    jobs = fields.List(fields.Nested(JobCreateSchema), required=True, validate=Length(min=1),
                       metadata={"description": "1 to BATCH_MAX (500 by default) jobs, each as POST /v1/jobs takes it"})


class JobEventSchema(Schema):
    at = fields.String(metadata={"description": "when (UTC, ISO 8601)"})
    kind = fields.String(metadata={"description": "the step: submitted, enqueued, claimed, retried, succeeded, failed, "
                                                  "cancelled, replayed, ... (docs/operations.md)"})
    attempt = fields.Integer(allow_none=True)
    actor = fields.String(allow_none=True, metadata={"description": "the worker (host:pid), or the user or admin"})
    topic = fields.String(allow_none=True)
    partition = fields.Integer(allow_none=True)
    offset = fields.Integer(allow_none=True)
    detail = fields.String(allow_none=True, metadata={"description": "the error, the retry's delay, ..."})


class JobEventsSchema(Schema):
    id = fields.String()
    events = fields.List(fields.Nested(JobEventSchema), metadata={"description": "oldest first"})


class JobSchema(Schema):
    id = fields.String(metadata={"description": "the job token"})
    type = fields.String()
    status = fields.String(validate=OneOf([s.value for s in JobStatus]))
    attempts = fields.Integer()
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    cancel_requested_at = fields.String(allow_none=True, metadata={
        "description": "when a cancel of the running job was asked for (its attempt then ends `cancelled`)"})


class JobBatchResultSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema), metadata={"description": "in the order submitted"})


class JobListQuerySchema(Schema):
    status = fields.String(validate=OneOf([s.value for s in JobStatus]))
    # The ceiling is a setting (PAGE_SIZE_MAX), so it is described, not declared as a maximum.
    limit = fields.Integer(validate=Range(min=1), metadata={
        "description": "page size (default PAGE_SIZE, 20); above PAGE_SIZE_MAX (100 by default) is a 400"})
    # ASCII digits only (str.isdigit() also takes "²", which int() refuses), and short enough to
    # stay a 64-bit integer in SQL: a `seq` never gets near 10**18.
    cursor = fields.String(
        validate=Regexp(r"^[0-9]{1,18}$", error="Not a next_cursor value."),
        metadata={"description": "next_cursor of the previous page"},
    )


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class JobResultSchema(Schema):
    id = fields.String()
    result = fields.Raw()


class HealthSchema(Schema):
    status = fields.String(validate=OneOf(["ok"]))


class ReadySchema(Schema):
    """/readyz, for both answers: 200 ready, 503 unavailable (then `failed` names the dependencies)."""

    status = fields.String(validate=OneOf(["ready", "unavailable"]))
    failed = fields.List(fields.String())
    checks = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": '"ok" or "unavailable: <error class>", per dependency'})


class InfoSchema(Schema):
    version = fields.String()
    pid = fields.Integer()
    ppid = fields.Integer()
    rss_bytes = fields.Integer()
    shared_bytes = fields.Integer()


class ErrorSchema(Schema):
    """The body of every error (errors.error_response); meant as flask-smorest's Api.ERROR_SCHEMA."""

    class Meta:
        unknown = INCLUDE  # api_abort(..., **extra) adds keys: `id` on a 503, `job_status` on a 409

    status = fields.Integer()
    error = fields.String()
    message = fields.String()
    fields_ = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields")


def register_job_type_schemas(api: Any) -> None:
    """Put each job type's args schema (``SumArgs``...) into the OpenAPI components, with the
    Number field documented as a JSON number."""
    from ..jobtypes import Number

    api.register_field(Number, "number", None)
    for _name, jt in sorted(REGISTRY.items()):
        api.spec.components.schema(jt.schema.__name__, schema=jt.schema)
