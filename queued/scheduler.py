"""The scheduler: the daemon's task that adds each schedule's jobs as they
fall due.

Theory of operation: timers as everywhere else, no polling. The next firing
of every schedule that is not paused is computed in memory (from the stored
schedules, read at start and after each change of schedules); the task
sleeps until the earliest one less schedules.AHEAD_SECONDS (its job is added
ahead, due at its time, so that it starts on time), or until `changed()`
wakes it. At a deadline it fires every schedule due, each firing through the
writer
(`Store.fire_schedule`, which makes sure one node adds it: with PostgreSQL
every node runs this same task and only one adds each firing). The rules
(catch-up at start and after a late wake, no-overlap) are queued/schedules.py's.

With PostgreSQL, other nodes change schedules too: their change comes as
news (a "schedules" NOTIFY sent with its commit, see queued/server/news.py),
which calls `changed()` as this node's own requests do; after the news
channel was lost and opened again the schedules are read again, since what
was sent meanwhile is gone. Nothing is read on a timer.

The sleep is on the monotonic clock, but firings are wall-clock times: a
clock set forward or a suspended machine would be noticed only at the
deadline. So no sleep lasts more than MAX_SLEEP_SECONDS: that wake reads
nothing, it only looks at the wall clock again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import trio

from queued import cron, schedules
from queued.store import Refused, StorageError, Store
from queued.store.contract import StoredSchedule
from queued.store.writer import Kind, Writer

log = logging.getLogger(__name__)
MAX_SLEEP_SECONDS = 60.0
RETRY_SECONDS = 5.0  # after a failed read of the schedules


class Entry:
    """A schedule the scheduler fires: its calendar and its next deadline."""

    __slots__ = ("catch_up", "identity", "name", "next", "recheck", "schedule", "tz")

    def __init__(self, row: StoredSchedule, schedule: cron.Schedule, next_firing: float | None) -> None:
        self.name = row.name
        self.schedule = schedule
        self.tz = row.tz
        self.catch_up: cron.CatchUp = row.catch_up  # type: ignore[assignment]  # stored once checked
        # The same schedule as before a reload (not removed and added again, not resumed).
        self.identity = (row.created_at, row.since)
        self.next = next_firing
        # A firing asked ahead that would overlap (--no-overlap): asked again at its time.
        self.recheck: float | None = None

    def deadline(self) -> float | None:
        """When the scheduler must next act for this schedule."""
        ahead = None if self.next is None else self.next - schedules.AHEAD_SECONDS
        if self.recheck is None:
            return ahead
        return self.recheck if ahead is None else min(ahead, self.recheck)


def _when(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="seconds")


class Scheduler:
    def __init__(
        self,
        db: Writer,
        *,
        wake_supervisor: Callable[[], None],
        accepting: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._wake_supervisor = wake_supervisor
        self._accepting = accepting
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._changed = trio.Event()
        self._started = False  # the schedules were read once (the start's catch-up is done)
        self.added = 0  # jobs added by firings since start

    def changed(self) -> None:
        """A schedule was added, removed, paused or resumed (here, or on another
        node sharing the store), or news of such changes may have been missed:
        read them again."""
        self._changed.set()

    def next_firing(self, name: str) -> float | None:
        """The deadline this scheduler holds for `name` (None: paused, unknown, or none)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.next

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        loaded = await self._load(starting=True)
        task_status.started()
        while True:
            earliest = min(
                (deadline for e in self._entries.values() if (deadline := e.deadline()) is not None),
                default=None,
            )
            wait = MAX_SLEEP_SECONDS if loaded else RETRY_SECONDS
            if earliest is not None:
                wait = min(wait, earliest - self._clock())
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._changed.wait()
            if self._changed.is_set() or not loaded:
                self._changed = trio.Event()
                # A start whose read failed still catches up once it succeeds.
                loaded = await self._load(starting=not self._started)
            await self._fire_due()

    async def _load(self, *, starting: bool) -> bool:
        """Read the schedules; at start, fire what was missed as each one's
        catch-up says. False when the store could not be read (PostgreSQL
        away): the schedules known go on firing, and the read is tried again
        after RETRY_SECONDS."""
        try:
            rows = await self.db.read(Store.schedules)
        except StorageError as exc:
            log.warning("schedules not read (%s): trying again in %g s", exc, RETRY_SECONDS)
            return False
        self._started = True
        now = self._clock()
        entries: dict[str, Entry] = {}
        firings: list[tuple[str, float]] = []
        for row in rows:
            if row.paused:
                continue
            try:
                schedule = schedules.parse(row.expression, row.created_at)
            except ValueError as exc:  # stored only once it parsed: a newer queued's syntax?
                log.error("schedule %s cannot be read (%s): it does not fire", row.name, exc)
                continue
            known = self._entries.get(row.name)
            if known is not None and known.identity == (row.created_at, row.since):
                entries[row.name] = known
                continue
            if not starting:
                upcoming = schedules.upcoming(schedule, row.tz, row.since, row.last_firing, now)
                entries[row.name] = Entry(row, schedule, upcoming)
                continue
            try:
                missed = schedules.at_start(
                    schedule,
                    row.tz,
                    row.since,
                    row.last_firing,
                    row.catch_up,
                    now,  # type: ignore[arg-type]
                )
            except ValueError:  # no firing before the year 10000
                entries[row.name] = Entry(row, schedule, None)
                continue
            if missed.dropped:
                log.info(
                    "schedule %s missed firings while queued was down: catch-up %s adds %d",
                    row.name,
                    row.catch_up,
                    len(missed.run),
                )
            firings += [(row.name, firing) for firing in missed.run]
            entries[row.name] = Entry(row, schedule, missed.upcoming)
        self._entries = entries
        await self._fire(firings)
        return True

    async def _fire_due(self) -> None:
        now = self._clock()
        horizon = now + schedules.AHEAD_SECONDS  # firings due by then are added now
        firings: list[tuple[str, float]] = []
        for entry in self._entries.values():
            if entry.recheck is not None and entry.recheck <= now:
                firings.append((entry.name, entry.recheck))
                entry.recheck = None
            if entry.next is None or entry.next > horizon:
                continue
            try:
                missed = schedules.when_due(entry.schedule, entry.tz, entry.next, entry.catch_up, horizon)
            except ValueError:  # the last firing before the year 10000
                firings.append((entry.name, entry.next))
                entry.next = None
                continue
            if len(missed.run) > 1 or missed.dropped:
                log.warning(
                    "schedule %s woke %.0f s late (the machine slept, or the clock moved): catch-up %s",
                    entry.name,
                    now - entry.next,
                    entry.catch_up,
                )
            firings += [(entry.name, firing) for firing in missed.run]
            entry.next = missed.upcoming
        await self._fire(firings)

    async def _fire(self, firings: list[tuple[str, float]]) -> None:
        """Add the jobs of `firings`, all in the writer's next transaction."""
        if not firings:
            return
        if not self._accepting():
            log.info("queued is shutting down: %d firing(s) add no job", len(firings))
            return
        now = self._clock()
        calls = [
            (name, firing, self.db.queue(Kind.ADD, Store.fire_schedule, name, firing, now))
            for name, firing in firings
        ]
        added = 0
        for name, firing, call in calls:
            try:
                fired = await call.outcome()
            except (Refused, StorageError) as exc:
                log.warning("schedule %s: the firing of %s added no job: %s", name, _when(firing), exc)
                continue
            if fired.outcome == "added":
                added += 1
            elif fired.outcome == "early" and (entry := self._entries.get(name)) is not None:
                entry.recheck = firing
            elif fired.outcome == "overlap":
                log.info(
                    "schedule %s: the firing of %s skipped, its previous job is unfinished (--no-overlap)",
                    name,
                    _when(firing),
                )
        if added:
            self.added += added
            self._wake_supervisor()
