"""Request and response schemas; flask-smorest turns them into /openapi.json."""
from __future__ import annotations

from typing import Any, Dict

from marshmallow import Schema, ValidationError, fields, post_load, validates_schema
from marshmallow.validate import OneOf, Range

from ..jobtypes import REGISTRY
from ..states import JobStatus


def _known_type(value: str) -> None:
    if value not in REGISTRY:
        raise ValidationError("Unknown job type; one of: %s." % ", ".join(sorted(REGISTRY)))


class JobCreateSchema(Schema):
    """POST /v1/jobs body. Unknown keys are rejected (marshmallow's RAISE default)."""

    type = fields.String(required=True, validate=_known_type, metadata={"description": "job type, e.g. sum"})
    args = fields.Dict(
        keys=fields.String(), required=True, metadata={"description": "arguments of the job type"}
    )

    @validates_schema
    def _check_args(self, data: Dict[str, Any], **_kw: Any) -> None:
        jt = REGISTRY.get(data.get("type", ""))
        if jt is not None and "args" in data:
            errors = jt.schema().validate(data["args"])
            if errors:
                raise ValidationError({"args": errors})

    @post_load
    def _load_args(self, data: Dict[str, Any], **_kw: Any) -> Dict[str, Any]:
        data["args"] = REGISTRY[data["type"]].schema().load(data["args"])
        return data


class JobSchema(Schema):
    id = fields.String(metadata={"description": "the job token"})
    type = fields.String()
    status = fields.String(validate=OneOf([s.value for s in JobStatus]))
    attempts = fields.Integer()
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    error = fields.String(allow_none=True)


class JobListQuerySchema(Schema):
    status = fields.String(validate=OneOf([s.value for s in JobStatus]))
    limit = fields.Integer(validate=Range(min=1))
    cursor = fields.String(metadata={"description": "next_cursor of the previous page"})


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class JobResultSchema(Schema):
    id = fields.String()
    result = fields.Raw()


class ErrorSchema(Schema):
    status = fields.Integer()
    error = fields.String()
    message = fields.String()
    fields_ = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields")
