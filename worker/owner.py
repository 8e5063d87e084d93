"""Who wrote an outbox row, and whether that writer is known to be dead.

An outbox row is leased to the worker process that wrote it (app/store/outbox.py). When that
process dies with rows left (SIGKILL, OOM), the lease alone would keep their messages off Kafka
for outbox_lease_seconds (minutes: the lease must outlast the longest job of a live writer). But
a writer on this very host is seen to be dead at once: no process has its pid. So an owner is
named ``<host>:<pid>:<nonce>``, and a worker on the same host - typically the one supervisor
started in its place a second later - takes such rows over without waiting for the lease.

Never wrong in the unsafe direction: a pid that is alive (another process may have it now) is
taken for its writer, and the lease decides. A mistaken take-over (two machines with one host
name) costs nothing either: a row taken over is looked up on Kafka before it is sent again
(worker/publisher.py), exactly as after a lease that ran out."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Optional, Tuple

#: Longest host name kept in an owner (the outbox's owner column holds 64 characters).
HOST_MAX = 40


def this_host() -> str:
    return socket.gethostname()[:HOST_MAX]


def new_owner(host: Optional[str] = None, pid: Optional[int] = None) -> str:
    """A name for this process's rows: unique to this process's life (the nonce tells apart two
    processes that had one pid)."""
    return "%s:%d:%s" % (this_host() if host is None else host[:HOST_MAX], os.getpid() if pid is None else pid,
                         uuid.uuid4().hex[:8])


def parse(owner: str) -> Optional[Tuple[str, int]]:
    """(host, pid) of an owner named by new_owner; None for any other name (older rows)."""
    host, sep, rest = owner.rpartition(":")  # rest: the nonce
    host, sep2, pid = host.rpartition(":")
    if not (sep and sep2 and host and pid.isdigit()):
        return None
    return host, int(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (nothing is sent)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def dead_here(owner: str, me: str, host: Optional[str] = None) -> bool:
    """True if ``owner`` wrote from this host and no process has its pid any more. Never for
    ``me``; never for another owner in this process either (tests run several workers in one)."""
    found = parse(owner)
    if owner == me or found is None or found[0] != (this_host() if host is None else host[:HOST_MAX]):
        return False
    return not pid_alive(found[1])
