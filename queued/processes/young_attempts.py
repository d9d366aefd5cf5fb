"""Attempts in their first moments, watched together.

Most jobs of a busy queue end within milliseconds of their start. One task
waits on one epoll set holding every young attempt's pidfd and hands each exit
to its owner as it comes, several per wake-up when they end together: no
task, cancel scope or trio registration per attempt. An attempt still running
after QUICK_EXIT_SECONDS (or its timeout, if shorter), or one asked to stop,
leaves the set for a task of its own (`Attempt.watch`), which copies its
output as it comes and keeps its timeout. A young job that prints more than a
pipe holds (64 KiB) waits at most QUICK_EXIT_SECONDS for that task.
"""

from __future__ import annotations

import heapq
import itertools
import math
import select
from collections.abc import Callable

import trio

from queued.processes.attempt import Attempt

QUICK_EXIT_SECONDS = 0.05


class YoungAttempts:
    """Young attempts by pidfd, and when each grows up. `on_exit(attempt)` is
    called when one's leader exits while it is young (still unreaped);
    `on_grown(attempt)` when it leaves the set alive."""

    def __init__(self, on_exit: Callable[[Attempt], None], on_grown: Callable[[Attempt], None]) -> None:
        self._on_exit = on_exit
        self._on_grown = on_grown
        self._epoll = select.epoll()
        self._watched: dict[int, Attempt] = {}  # pidfd -> attempt
        # (trio time it grows up, tie-breaker, attempt); an entry of an attempt
        # that already left is dropped once it reaches the top.
        self._growing: list[tuple[float, int, Attempt]] = []
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._watched)

    def add(self, attempt: Attempt) -> None:
        process = attempt.process
        assert process is not None
        timeout = math.inf if attempt.claimed.timeout is None else attempt.claimed.timeout
        grows_at = attempt.spawned_at + min(QUICK_EXIT_SECONDS, timeout)
        self._epoll.register(process.pidfd, select.EPOLLIN)
        self._watched[process.pidfd] = attempt
        heapq.heappush(self._growing, (grows_at, next(self._order), attempt))
        if self._sleep is not None and grows_at < self._sleep.deadline:
            self._sleep.deadline = grows_at

    def let_go(self, attempt: Attempt) -> None:
        """Hand a young attempt to its own task now (it is to be stopped)."""
        if self._leave(attempt):
            self._on_grown(attempt)

    def _is_young(self, attempt: Attempt) -> bool:
        # A pidfd's number is reused once its attempt is reaped: compare attempts.
        process = attempt.process
        return process is not None and self._watched.get(process.pidfd) is attempt

    def _leave(self, attempt: Attempt) -> bool:
        if not self._is_young(attempt):
            return False
        assert attempt.process is not None
        del self._watched[attempt.process.pidfd]
        self._epoll.unregister(attempt.process.pidfd)
        return True

    def _next_growth(self) -> float:
        while self._growing and not self._is_young(self._growing[0][2]):
            heapq.heappop(self._growing)
        return self._growing[0][0] if self._growing else math.inf

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                with trio.CancelScope(deadline=self._next_growth()) as self._sleep:
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                self._sleep = None
                for pidfd, _ in self._epoll.poll(0):
                    attempt = self._watched.get(pidfd)
                    if attempt is not None and self._leave(attempt):
                        self._on_exit(attempt)
                now = trio.current_time()
                while self._next_growth() <= now:
                    attempt = heapq.heappop(self._growing)[2]
                    self._leave(attempt)
                    self._on_grown(attempt)
        finally:
            self._epoll.close()
