"""What a running job may ask about itself: ``current_job().cancelled()`` - whether someone asked
to cancel it (POST /v1/jobs/<id>/cancel while it runs). The worker sets the context around each
run (worker/runner.py); outside a worker (a job function called directly) nothing is ever
cancelled. Asking is cheap: the store is read at most once per ``check_every`` seconds, and never
in a job's first ``check_every`` seconds, so short jobs cost nothing."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)


class JobContext:
    #: Longest a cancel request waits to be seen by a job that asks (s); also `sleep`'s step.
    check_every = 0.5

    def __init__(self, job_id: Optional[str] = None, attempt: int = 0,
                 ask: Optional[Callable[[], bool]] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id, self.attempt = job_id, attempt
        self._ask, self._clock = ask, clock
        self._last = clock()
        self._cancelled = False

    def cancelled(self) -> bool:
        """True once a cancel of this job was requested (then its attempt ends `cancelled`)."""
        if self._cancelled or self._ask is None:
            return self._cancelled
        now = self._clock()
        if now - self._last < self.check_every:
            return False
        self._last = now
        try:
            self._cancelled = bool(self._ask())
        except Exception as exc:  # the store is down: not cancelled, as far as we can tell; ask again later
            log.warning("job %s: could not look for a cancel request: %s", self.job_id, exc.__class__.__name__)
        return self._cancelled


_NOWHERE = JobContext()
_local = threading.local()


def current_job() -> JobContext:
    return getattr(_local, "job", None) or _NOWHERE


@contextlib.contextmanager
def running(job: JobContext) -> Iterator[JobContext]:
    _local.job = job
    try:
        yield job
    finally:
        _local.job = None
