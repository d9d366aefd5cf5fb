"""Fault injection: chosen calls, as `queued.processes.job_process` makes them, fail on cue.

`inject(target, nth, errno, times=1)` makes the `nth` call of `os.<target>`
(or of the log file's open, target "log_open", or of the spawn, through libc
or os, target "posix_spawn") inside queued.processes.job_process, and the
`times - 1` after it, raise OSError with that errno; every other call goes
through. Only that module sees the faults:
the test's own I/O, trio's and SQLite's are untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from queued.processes import job_process

TARGETS = ("write", "open", "pipe", "posix_spawn", "pidfd_open", "log_open")


class Fault:
    def __init__(self, target: str, nth: int, error: int, times: int = 1) -> None:
        self.target = target
        self.nth = nth
        self.error = error
        self.times = times
        self.calls = 0
        self.fired = False

    @property
    def strerror(self) -> str:
        return os.strerror(self.error)

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.nth <= self.calls < self.nth + self.times:
                self.fired = True
                raise OSError(self.error, os.strerror(self.error))
            return real(*args, **kwargs)

        return call


class _FaultyOs:
    """`os`, with one function wrapped."""

    def __init__(self, fault: Fault) -> None:
        self._fault = fault
        self._wrapped = fault.wrap(getattr(os, fault.target))

    def __getattr__(self, name: str) -> Any:
        if name == self._fault.target:
            return self._wrapped
        return getattr(os, name)


# Targets that are functions of job_process, not of os.
_FUNCTIONS = {"log_open": "_open_log", "posix_spawn": "_spawn"}


@contextlib.contextmanager
def inject(target: str, nth: int, error: int, times: int = 1) -> Iterator[Fault]:
    assert target in TARGETS, target
    fault = Fault(target, nth, error, times)
    if target in _FUNCTIONS:
        name = _FUNCTIONS[target]
        real = getattr(job_process, name)
        setattr(job_process, name, fault.wrap(real))
        try:
            yield fault
        finally:
            setattr(job_process, name, real)
    else:
        job_process.os = _FaultyOs(fault)  # type: ignore[assignment]
        try:
            yield fault
        finally:
            job_process.os = os
