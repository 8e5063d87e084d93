"""A run's time bound: ``deadline(seconds)`` raises JobTimedOut in the job when it runs longer.

In the worker's main thread (``python -m worker``) by SIGALRM, which also interrupts a job
blocked in sleep() or a socket read; in any other thread (a worker run by tests in a thread) by
an exception set on that thread, raised at the job's next Python instruction. JobTimedOut is a
BaseException, so a job's own ``except Exception`` cannot swallow it. A job stuck inside one
C call (a huge regex, a blocking call that ignores signals) ends only when that call returns:
JOB_MAX_SECONDS and the poll interval derived from it still bound the worker's time with the group."""
from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from typing import Any, Iterator


class JobTimedOut(BaseException):
    def __init__(self, seconds: float) -> None:
        super().__init__("timed out after %g s" % seconds)
        self.seconds = seconds


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
    else:
        with _async_exception(seconds):
            yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expired(_signum: int, _frame: Any) -> None:
        raise JobTimedOut(seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # first: nothing may fire after the run
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _async_exception(seconds: float) -> Iterator[None]:
    target = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(_TIMED_OUT[seconds]))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # set but maybe not raised yet (the run ended at that moment): withdrawn
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)


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
