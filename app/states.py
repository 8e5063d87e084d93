"""Job states and the transitions the store allows between them."""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is in its life: queued -> running -> succeeded | failed, or queued -> cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """A terminal job never runs again: redelivered messages for it are skipped."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
