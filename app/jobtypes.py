"""Job types: what a job of each type accepts and what it does.

Adding a job type is one decorated function. The keyword arguments of ``@job_type`` are
marshmallow fields describing ``args``; the API validates requests against them (400 naming
the field otherwise) and the worker calls the function with the validated args as keyword
arguments. Whatever JSON-serialisable value it returns is the job's result; raising fails the
attempt (retried, then dead-lettered)::

    @job_type("upper", text=fields.String(required=True, validate=Length(max=1000)))
    def upper(text):
        return {"text": text.upper()}

Per type, and otherwise the deployment's settings: ``timeout`` (seconds a run may take, at most
JOB_MAX_SECONDS; a run past it fails that attempt "timed out after S s"), ``max_attempts`` (runs
before the job is failed and dead-lettered; MAX_ATTEMPTS) and ``backoff`` (first retry delay in
seconds, doubling up to RETRY_BACKOFF_MAX, or a function attempt -> seconds; RETRY_BACKOFF).
A long job should look at ``current_job().cancelled()`` now and then (worker/control.py) and
return early when it is: a cancel of a running job ends its attempt as `cancelled` whatever it
returns, and at the latest its timeout ends it. See docs/worker.md, "Writing a job type"."""
from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Type, Union

from marshmallow import Schema, ValidationError, fields
from marshmallow.validate import Length, Range

from .config import DEFAULTS

#: Most numbers one `sum` job adds.
SUM_MAX_NUMBERS = 1000
#: Largest magnitude of each number: integers up to here are exact in every JSON client (2**53),
#: and a sum of SUM_MAX_NUMBERS of them stays finite and serialisable.
SUM_MAX_MAGNITUDE = 2 ** 53
#: Longest message of a `fail` job.
FAIL_MESSAGE_MAX = 1000
#: Most rounds of one `digest` job (about a tenth of a second of CPU on the machine of README).
DIGEST_MAX_ROUNDS = 100000


class Limits:
    """The longest job a deployment allows: its JOB_MAX_SECONDS setting (app/config.py), set by
    ``configure`` in the API and the worker. `sleep` jobs are bounded by it; the worker derives its
    max.poll.interval and outbox lease from it, and provisioning supervisor's stopwaitsecs
    (worker/defaults.py)."""

    job_max_seconds = float(DEFAULTS["JOB_MAX_SECONDS"])


LIMITS = Limits()


def configure(settings: Dict[str, Any]) -> None:
    LIMITS.job_max_seconds = float(settings["JOB_MAX_SECONDS"])


class UpToLongestJob(Range):
    """Range(min=0, max=the longest job), the maximum read when used: validation and the OpenAPI
    document follow the setting of the process, whenever it was configured."""

    def __init__(self) -> None:
        super().__init__(min=0, max=None)

    @property
    def max(self) -> float:  # type: ignore[override]
        return LIMITS.job_max_seconds

    @max.setter
    def max(self, _value: Any) -> None:
        pass  # Range.__init__ sets it; the setting decides


class JobFailed(Exception):
    """Raised by a job to fail the attempt with a message meant for the user."""


#: What a run without a timeout of its type may take beyond JOB_MAX_SECONDS (s).
RUN_GRACE_SECONDS = 5.0

#: A type's backoff: the first delay in seconds (doubling), or attempt -> seconds.
Backoff = Union[float, Callable[[int], float]]


@dataclass(frozen=True)
class JobType:
    name: str
    func: Callable[..., Any]
    schema: Type[Schema]
    timeout: Optional[float] = None
    max_attempts: Optional[int] = None
    backoff: Optional[Backoff] = None

    def run(self, args: Dict[str, Any]) -> Any:
        return self.func(**args)

    def run_seconds(self) -> float:
        """How long a run may take: the type's timeout, never past the deployment's longest job;
        without one, the longest job and RUN_GRACE_SECONDS (a `sleep` of exactly the longest job
        allowed completes)."""
        ceiling = LIMITS.job_max_seconds
        return ceiling + RUN_GRACE_SECONDS if self.timeout is None else min(float(self.timeout), ceiling)

    def load_args(self, args: Any) -> Dict[str, Any]:
        """``args`` as this type's schema loads them (marshmallow's ValidationError otherwise)."""
        return _instance(self.schema).load(args)


@functools.lru_cache(maxsize=None)
def _instance(schema: Type[Schema]) -> Schema:
    """One instance per args schema, reused (loading does not change it): building a marshmallow
    schema costs more than loading a job's args with it, and a bulk submit loads hundreds."""
    return schema()


REGISTRY: Dict[str, JobType] = {}


#: ``@job_type`` keywords that are options of the type, not fields of its args (unless given a field).
OPTIONS = ("timeout", "max_attempts", "backoff")


def job_type(name: str, **arg_fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as job type ``name`` taking ``arg_fields`` (marshmallow
    fields), with the options ``timeout``, ``max_attempts``, ``backoff`` (see the module's doc)."""
    options = {k: arg_fields.pop(k) for k in OPTIONS if k in arg_fields and not isinstance(arg_fields[k], fields.Field)}
    _check_options(name, options)

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError("job type %r is already registered" % name)
        schema = Schema.from_dict(arg_fields, name="%sArgs" % name.title().replace("_", ""))
        REGISTRY[name] = JobType(name=name, func=func, schema=schema, **options)
        return func

    return register


def _check_options(name: str, options: Dict[str, Any]) -> None:
    timeout, attempts, backoff = (options.get(k) for k in OPTIONS)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or
                                not 0 < timeout < math.inf):
        raise ValueError("job type %r: timeout must be a positive number of seconds" % name)
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100):
        raise ValueError("job type %r: max_attempts must be an integer from 1 to 100" % name)
    if backoff is not None and not callable(backoff) and (
            isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff < math.inf):
        raise ValueError("job type %r: backoff must be seconds (>= 0) or a function of the attempt" % name)


class Number(fields.Field):
    """A JSON number: unlike marshmallow's Float it refuses strings, booleans, NaN and infinities."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a number.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("Not a finite number.")
        return value


class Count(fields.Field):
    """A JSON integer: unlike marshmallow's Integer it refuses floats, strings and booleans."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not an integer.")
        return value


@job_type("sum", numbers=fields.List(
    Number(validate=Range(min=-SUM_MAX_MAGNITUDE, max=SUM_MAX_MAGNITUDE)),
    required=True, validate=Length(max=SUM_MAX_NUMBERS)))
def sum_numbers(numbers: list) -> Dict[str, Any]:
    """Add up ``numbers``."""
    return {"sum": sum(numbers)}


@job_type("sleep", seconds=Number(required=True, validate=UpToLongestJob()))
def sleep(seconds: float) -> Dict[str, Any]:
    """Wait ``seconds`` (at most the longest job allowed): for drills of long jobs, restarts and
    rebalances. Stops early when the job is cancelled (``current_job().cancelled()``)."""
    from .jobcontext import current_job

    job = current_job()
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return {"slept": seconds}
        if job.cancelled():
            return {"slept": round(seconds - left, 3), "cancelled": True}
        time.sleep(min(left, job.check_every))


@job_type("fail", message=fields.String(required=True, validate=Length(min=1, max=FAIL_MESSAGE_MAX)))
def fail(message: str) -> None:
    """Always raise: exercises retries and the dead-letter topic."""
    raise JobFailed(message)


@job_type("digest", rounds=Count(required=True, validate=Range(min=1, max=DIGEST_MAX_ROUNDS)))
def digest(rounds: int) -> Dict[str, Any]:
    """SHA-256 applied ``rounds`` times, from empty input (bounded): a small CPU-bound job, for
    the benchmarks."""
    value = b""
    for _ in range(rounds):
        value = hashlib.sha256(value).digest()
    return {"digest": value.hex()}


@job_type("noop")
def noop() -> Dict[str, Any]:
    """Do nothing, at once: measures the pipeline's own overhead (API, Kafka, worker, store) in
    the benchmarks, with no job work to hide it."""
    return {"ok": True}
