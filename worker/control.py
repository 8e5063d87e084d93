"""A run's time bound: ``deadline(seconds)`` raises JobTimedOut in the job when it runs longer.

In the worker's main thread (``python -m worker``) by SIGALRM, which also interrupts a job
blocked in sleep() or a socket read; in any other thread (a worker run by tests in a thread) by
an exception set on that thread, raised at the job's next Python instruction. JobTimedOut is a
BaseException, so a job's own ``except Exception`` cannot swallow it; a job that swallows it
anyway (a bare ``except:``) is interrupted again every REARM_SECONDS, and its attempt fails as
timed out whatever it returns. A job stuck inside one C call (a huge regex, a call that ignores
signals) ends only when that call returns: JOB_MAX_SECONDS and the poll interval derived from it
still bound the worker's time with the group.

The SIGALRM handler is installed once and stays: an alarm outside a run (one that fired as the
run ended) is ignored, never raised in the worker's own code. ``shielded`` defers the alarm
while the worker's code runs inside a job's time (the store query behind
``current_job().cancelled()``), so it never lands inside the store's connection pool."""
from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

T = TypeVar("T")

#: A run that swallowed its JobTimedOut is interrupted again this often.
REARM_SECONDS = 1.0


class JobTimedOut(BaseException):
    def __init__(self, seconds: float) -> None:
        super().__init__("timed out after %g s" % seconds)
        self.seconds = seconds


class _Alarm:
    """The main thread's deadline (one run at a time)."""

    def __init__(self) -> None:
        self.active: Optional[float] = None
        self.fired = False
        self.shield = 0
        self.pending = False
        self.installed = False

    def on_signal(self, _signum: int, _frame: Any) -> None:
        if self.active is None:
            return  # a run that just ended: nothing to interrupt
        self.fired = True
        if self.shield:
            self.pending = True  # raised when the worker's code is done
            return
        raise JobTimedOut(self.active)

    def arm(self, seconds: float) -> None:
        if not self.installed:
            signal.signal(signal.SIGALRM, self.on_signal)
            self.installed = True
        self.active, self.fired, self.pending = seconds, False, False
        signal.setitimer(signal.ITIMER_REAL, seconds, REARM_SECONDS)

    def disarm(self) -> bool:
        """Idempotent; whether the deadline had fired."""
        self.active = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        return self.fired


_ALARM = _Alarm()


def disarm() -> None:
    """Make sure no alarm is pending (the worker calls it after every run, whatever happened)."""
    if threading.current_thread() is threading.main_thread():
        _ALARM.disarm()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    if threading.current_thread() is threading.main_thread():
        _ALARM.arm(seconds)
        try:
            yield
        finally:
            fired = _ALARM.disarm()
        if fired:  # the job swallowed its JobTimedOut: what it returned does not count
            raise JobTimedOut(seconds)
    else:
        with _async_exception(seconds):
            yield


def shielded(work: Callable[[], T]) -> T:
    """``work()`` with the alarm deferred until it returns (main thread; elsewhere as it is)."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    _ALARM.shield += 1
    try:
        return work()
    finally:
        _ALARM.shield -= 1
        if not _ALARM.shield and _ALARM.pending and _ALARM.active is not None:
            _ALARM.pending = False
            raise JobTimedOut(_ALARM.active)


@contextlib.contextmanager
def _async_exception(seconds: float) -> Iterator[None]:
    target = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state: Dict[str, Any] = {"done": False, "fired": False, "timer": None}

    def expire() -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(_TIMED_OUT[seconds]))
            state["timer"] = again = threading.Timer(REARM_SECONDS, expire)  # if it is swallowed
            again.daemon = True
            again.start()

    state["timer"] = first = threading.Timer(seconds, expire)
    first.daemon = True
    first.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            state["timer"].cancel()
            if state["fired"]:  # set but maybe not raised yet (the run ended at that moment): withdrawn
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)
    if state["fired"]:
        raise JobTimedOut(seconds)


class _Classes(dict):
    """seconds -> a JobTimedOut subclass that knows them: an exception set on a thread is raised
    without arguments, so the class itself must carry the message."""

    def __missing__(self, seconds: float) -> type:
        def init(self: Any) -> None:
            JobTimedOut.__init__(self, seconds)

        made = type("JobTimedOut", (JobTimedOut,), {"__init__": init})
        self[seconds] = made
        return made


_TIMED_OUT = _Classes()
