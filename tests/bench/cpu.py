"""CPU time of process groups (gunicorn, job workers, Kafka, the database; Celery's workers and
Redis), from /proc: what each part of a stack spends on a batch of jobs.

A group is named by its root pids; its CPU time is that of the roots and every live
descendant, user + system, plus what they collected from children that exited (``cutime`` +
``cstime``: a gunicorn worker recycled after max_requests, a PostgreSQL backend that closed), so
nothing is lost when processes come and go during the batch."""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, List, Optional, Set

TICKS = os.sysconf("SC_CLK_TCK")

Roots = Callable[[], Iterable[int]]


def _stat(pid: int) -> Optional[List[str]]:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            text = fh.read()
    except OSError:
        return None
    # Fields after the command, which may hold spaces and parentheses: state is field 3.
    return text[text.rindex(")") + 2:].split()


def _children() -> Dict[int, List[int]]:
    out: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                out.setdefault(int(fields[1]), []).append(int(name))
    return out


def tree(roots: Iterable[int], children: Optional[Dict[int, List[int]]] = None) -> Set[int]:
    """``roots`` and all their live descendants."""
    children = _children() if children is None else children
    seen: Set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def seconds(pids: Iterable[int]) -> float:
    """utime + stime + cutime + cstime of ``pids`` (each once), in seconds."""
    total = 0
    for pid in set(pids):
        fields = _stat(pid)
        if fields is not None:  # fields 14-17 of /proc/pid/stat, counted from 1 with pid and comm
            total += sum(int(f) for f in fields[11:15])
    return total / TICKS


class Meter:
    """``start()`` then ``stop()``: CPU seconds each group spent in between."""

    def __init__(self, groups: Dict[str, Roots]) -> None:
        self.groups = groups
        self.before: Dict[str, float] = {}

    def _now(self) -> Dict[str, float]:
        children = _children()
        return {name: seconds(tree(roots(), children)) for name, roots in self.groups.items()}

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> Dict[str, float]:
        after = self._now()
        return {name: round(max(0.0, after[name] - self.before.get(name, 0.0)), 2) for name in self.groups}


def pidfile(path: str) -> List[int]:
    """The pid on the first line of ``path`` (PostgreSQL's postmaster.pid has more lines)."""
    try:
        with open(path) as fh:
            return [int(fh.readline().strip())]
    except (OSError, ValueError):
        return []
