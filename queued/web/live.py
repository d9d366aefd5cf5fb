"""What every viewer shares: one snapshot of the daemon per change, and the
history of ended attempts behind the charts and /metrics.

Theory: the supervisor sets its change event on every start, end and request
that moves jobs. `Live.run` waits on it, reads one snapshot (status and
slots), publishes it to every open stream, then waits at least
MIN_INTERVAL before the next: at most two updates a second however busy the
daemon, and one read per update however many viewers. While no one watches
it reads nothing at all.

`History` keeps the attempts that ended in the last day, read from the
store (so it survives a restart) and then topped up with those that ended
since, at most every HISTORY_INTERVAL and only when asked.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from queued.store.reports import EndedAttempt, attempts_ended

MIN_INTERVAL = 0.5  # seconds between two updates of the streams
HISTORY_SECONDS = 86_400
HISTORY_INTERVAL = 2.0
HISTORY_LIMIT = 200_000  # attempts one read takes at most
LATE_RECORDS = 5.0  # an attempt's end is committed this long after its ended_at at most
# Buckets (seconds) of the dispatch-delay and run-time histograms.
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Live:
    """The latest snapshot, and an event for the next one."""

    def __init__(
        self, next_change: Callable[[], trio.Event], read: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        self._next_change = next_change
        self._read = read
        self.version = 0
        self.snapshot: bytes = b"{}"
        self._published = trio.Event()
        self._watched = trio.Event()
        self._returned = trio.Event()  # set when viewers come back to a stale snapshot
        self.stale = True  # no one watched since the snapshot was read: changes were missed
        self.viewers = 0

    def watch(self) -> int:
        """A new viewer; returns the version it has seen (the current one if stale)."""
        self.viewers += 1
        self._watched.set()
        if self.stale:
            self._returned.set()
            return self.version
        return 0

    def unwatch(self) -> None:
        self.viewers -= 1
        if self.viewers == 0:
            self._watched = trio.Event()
            self.stale = True

    async def next(self, seen: int) -> tuple[int, bytes]:
        """The first snapshot newer than version `seen`."""
        while self.version <= seen:
            await self._published.wait()
        return self.version, self.snapshot

    async def run(self) -> None:
        while True:
            await self._watched.wait()
            change = self._next_change()
            self._returned = trio.Event()
            facts = await self._read()
            self.version += 1
            facts["version"] = self.version
            self.snapshot = msgspec.json.encode(facts)
            self.stale = self.viewers == 0
            published, self._published = self._published, trio.Event()
            published.set()
            await trio.sleep(MIN_INTERVAL)
            async with trio.open_nursery() as either:  # a change, or viewers back to a stale one
                for event in (change, self._returned):
                    either.start_soon(_set_then_cancel, event, either.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class Histogram:
    """Cumulative counts per upper bound, as Prometheus wants them."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        running, found = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            found.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return found


class History:
    """Attempts ended in the last day, plus counters since the web started."""

    def __init__(self, started_at: float, ended: Callable[..., list[EndedAttempt]] = attempts_ended) -> None:
        self.started_at = started_at
        self._ended = ended  # the engine's reports.attempts_ended
        self.attempts: deque[EndedAttempt] = deque()
        self._recent: set[tuple[int, int]] = set()  # keys of attempts within LATE_RECORDS of the mark
        self.mark: float | None = None  # every attempt that ended before it is known
        self.ended: Counter[tuple[str, str]] = Counter()  # (queue, outcome) -> attempts since start
        self.delay = Histogram(DELAY_BUCKETS)
        self.run_time = Histogram(RUN_BUCKETS)
        self.refreshed_at = -math.inf
        self.changes_seen = -1
        self._lock = trio.Lock()

    async def refresh(self, reader: Any, changes: int, now: float | None = None) -> None:
        """Top up from the store (`reader.read` runs a store function where
        the web reads, `reader.run` a function on the web's own thread, where
        all else that touches the history runs too): at most every
        HISTORY_INTERVAL, and only after a change (`changes` counts them) or
        a minute."""
        async with self._lock:
            since = trio.current_time() - self.refreshed_at
            if since < HISTORY_INTERVAL or (changes == self.changes_seen and since < 60):
                return
            now = time.time() if now is None else now
            after = now - HISTORY_SECONDS if self.mark is None else self.mark - LATE_RECORDS
            found = await reader.read(self._ended, after, now, HISTORY_LIMIT)
            await reader.run(self._top_up, found, now)  # the adding, off the daemon's thread
            self.refreshed_at = trio.current_time()
            self.changes_seen = changes

    def _top_up(self, found: list[EndedAttempt], now: float) -> None:
        self.add(found, now, complete=len(found) < HISTORY_LIMIT)

    def add(self, found: list[EndedAttempt], now: float, *, complete: bool = True) -> None:
        """Attempts read for the window (mark - LATE_RECORDS, now], oldest first;
        those seen at the last read are skipped. `complete`: the read was not cut short."""
        for attempt in found:
            if (attempt.job_id, attempt.attempt) in self._recent:
                continue
            self.attempts.append(attempt)
            if attempt.ended_at >= self.started_at:
                self.ended[(attempt.queue, attempt.outcome)] += 1
                self.run_time.observe(attempt.ran)
                if attempt.waited is not None:
                    self.delay.observe(attempt.waited)
        self.mark = now if complete or not found else found[-1].ended_at
        self._recent = {(a.job_id, a.attempt) for a in found if a.ended_at > self.mark - LATE_RECORDS}
        while self.attempts and self.attempts[0].ended_at < now - HISTORY_SECONDS:
            self.attempts.popleft()
