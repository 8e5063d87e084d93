"""Who wrote an outbox row, and whether that writer is known to be dead.

An outbox row is leased to the worker process that wrote it (app/store/outbox.py). When that
process dies with rows left (SIGKILL, OOM), the lease alone would keep their messages off Kafka
for outbox_lease_seconds (minutes: the lease must outlast the longest job of a live writer). But
a writer that ran where this worker runs is seen to be dead at once: no process has its pid. So
an owner is named ``<place>:<pid>:<nonce>``, and a worker in the same place - typically the one
supervisor started in its place a second later - takes such rows over once they have been quiet
for DEAD_WRITER_QUIET_SECONDS (worker/defaults.py), without waiting for the lease.

The place is where a pid means one process: the host name (for people reading the table) and a
hash of the kernel's boot id and the pid namespace (for the check). Two machines with one host
name, or a container sharing its host's name, are different places. Within a place the check errs
only towards waiting: a pid that is alive (maybe another process has it now) or a zombie counts as
the writer, and the lease decides."""
from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid
from typing import Optional, Tuple

#: Host name characters kept in an owner (the outbox's owner column holds 64 characters).
HOST_MAX = 24


def _read(path: str) -> str:
    try:
        if path.startswith("/proc/self/ns/"):
            return os.readlink(path)  # e.g. pid:[4026531836]: one per pid namespace
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=None)  # a process's place does not change: read and hashed once
def this_place() -> str:
    """``<host name>~<8 hex>``: the host name, then what tells this kernel boot and pid namespace apart."""
    where = hashlib.sha1(("%s|%s" % (_read("/proc/sys/kernel/random/boot_id"),
                                     _read("/proc/self/ns/pid"))).encode()).hexdigest()[:8]
    return "%s~%s" % (socket.gethostname()[:HOST_MAX], where)


def new_owner(place: Optional[str] = None, pid: Optional[int] = None) -> str:
    """A name for this process's rows: unique to this process's life (the nonce tells apart two
    processes that had one pid)."""
    return "%s:%d:%s" % (this_place() if place is None else place, os.getpid() if pid is None else pid,
                         uuid.uuid4().hex[:8])


def parse(owner: str) -> Optional[Tuple[str, int]]:
    """(place, pid) of an owner named by new_owner; None for any other name (older rows)."""
    head, sep, _nonce = owner.rpartition(":")
    place, sep2, pid = head.rpartition(":")
    if not (sep and sep2 and "~" in place and pid.isdigit()):
        return None
    return place, int(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (nothing is sent)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def dead_here(owner: str, me: str, place: Optional[str] = None) -> bool:
    """True if ``owner`` wrote from this place and no process has its pid any more. Never for
    ``me``; never for another owner in this process either (tests run several workers in one)."""
    found = parse(owner)
    if owner == me or found is None or found[0] != (this_place() if place is None else place):
        return False
    return not pid_alive(found[1])
