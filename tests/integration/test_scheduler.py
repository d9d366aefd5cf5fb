"""The scheduler (queued/scheduler.py) on a real store, on trio's mock clock:
it sleeps until each firing, adds its job AHEAD_SECONDS before, due then
(not a tick early or late),
catches up as each schedule says when it starts after a stop, skips with
--no-overlap, and a change of schedules wakes it. Deterministic: virtual time
jumps straight to each deadline, and the store is called inline (the writer's
thread would let virtual time run on while a commit is in flight)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from queued import schedules
from queued.scheduler import MAX_SLEEP_SECONDS, Scheduler
from queued.store.sqlite import SqliteStore
from tests.store_harness import Direct, new

T0 = 1_700_000_000.0


class Done:
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error

    async def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class InlineWriter:
    """The writer's entry points the scheduler uses, each call run at once."""

    def __init__(self, store: Direct) -> None:
        self.store = store
        self.calls = 0

    async def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.store, fn.__name__)(*args, **kwargs)

    def queue(self, kind: Any, fn: Any, *args: Any, **kwargs: Any) -> Done:
        self.calls += 1
        try:
            return Done(getattr(self.store, fn.__name__)(*args, **kwargs))
        except Exception as exc:
            return Done(error=exc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Direct]:
    engine = SqliteStore.open(tmp_path / "q.db")
    direct = Direct(engine)
    direct.recover(3600.0, T0)
    yield direct
    engine.conn.close()


def now() -> float:
    """Wall-clock time on the mock clock: T0 when the test starts."""
    return T0 + trio.current_time()


def add_schedule(store: Direct, name: str = "tick", expression: str = "@every 10s", **options: Any) -> None:
    store.add_schedule(
        schedules.new_schedule(
            name,
            expression,
            "UTC",
            new("true", now=now()),
            no_overlap=options.get("no_overlap", False),
            catch_up=options.get("catch_up", "one"),
            now=now(),
        ),
        now(),
    )


def due(store: Direct, name: str = "tick") -> list[float]:
    """When each job of the schedule is due, relative to T0."""
    return [job.run_at - T0 for job in store.list_jobs(label=name)]


class Running:
    def __init__(self, store: Direct) -> None:
        self.writer = InlineWriter(store)
        self.woken = 0
        self.accepting = True
        self.scheduler = Scheduler(
            self.writer,  # type: ignore[arg-type]
            wake_supervisor=self._wake,
            accepting=lambda: self.accepting,
            clock=now,
        )

    def _wake(self) -> None:
        self.woken += 1


async def run_for(store: Direct, seconds: float) -> Running:
    running = Running(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return running


async def test_fires_each_firing_on_time(store: Direct, autojump_clock: trio.testing.MockClock) -> None:
    add_schedule(store)
    running = await run_for(store, 65)
    assert due(store) == [10, 20, 30, 40, 50, 60]
    # Each added ahead, so that its commit and the supervisor's read are done by its time.
    ahead = [job.run_at - job.created_at for job in store.list_jobs(label="tick")]
    assert ahead == [schedules.AHEAD_SECONDS] * 6
    assert running.woken == 6  # the supervisor learns of each job
    [stored] = store.schedules()
    assert stored.last_firing == T0 + 60


@pytest.mark.parametrize(
    ("catch_up", "at_start"),
    [("none", []), ("one", [35]), ("all", [35, 35, 35])],
)
async def test_a_stop_over_three_firings_catches_up_as_chosen(
    store: Direct, autojump_clock: trio.testing.MockClock, catch_up: str, at_start: list[float]
) -> None:
    add_schedule(store, catch_up=catch_up)
    await run_for(store, 5)  # stopped before the first firing (at 10)
    await trio.sleep(30)  # down while 10, 20 and 30 pass
    await run_for(store, 20)  # up again from 35 to 55
    assert due(store) == [*at_start, 40, 50]
    fired = [f for (f,) in store.conn.execute("SELECT fired_at FROM firings ORDER BY fired_at")]
    expected = {"none": [], "one": [30], "all": [10, 20, 30]}[catch_up]
    assert [f - T0 for f in fired] == [*expected, 40, 50]


async def test_a_cron_schedule_fires_on_the_minute(
    store: Direct, autojump_clock: trio.testing.MockClock
) -> None:
    add_schedule(store, "minutely", "* * * * *")
    await run_for(store, 181)
    start = T0 - T0 % 60  # T0 is 20 s past a minute
    assert due(store, "minutely") == [start + 60 - T0, start + 120 - T0, start + 180 - T0]


async def test_no_overlap_skips_while_the_previous_job_is_unfinished(
    store: Direct, autojump_clock: trio.testing.MockClock
) -> None:
    add_schedule(store, no_overlap=True)
    await run_for(store, 35)  # nothing runs the first job: it stays pending
    assert due(store) == [10]
    [first] = store.list_jobs(label="tick")
    store.cancel([first.id], now())
    await run_for(store, 10)  # the firing at 40 adds a job again
    assert due(store) == [10, 40]


async def test_no_overlap_is_decided_at_the_firings_time_not_ahead(
    store: Direct, autojump_clock: trio.testing.MockClock
) -> None:
    """The latest job is unfinished when the next firing is asked ahead but
    ends before its time: that firing adds its job, at its time."""
    add_schedule(store, no_overlap=True)
    running = Running(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.run)
        await trio.sleep(19.75)  # the firing of 20 was asked at 19.5: too early to tell
        [first] = store.list_jobs(label="tick")
        store.cancel([first.id], now())
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert due(store) == [10, 20]
    second = store.list_jobs(label="tick")[1]
    assert second.created_at == T0 + 20  # asked again at its time
    assert store.schedules()[0].last_firing == T0 + 20


async def test_a_change_of_schedules_wakes_it(store: Direct, autojump_clock: trio.testing.MockClock) -> None:
    running = Running(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.run)
        await trio.sleep(100)  # no schedule: it sleeps its longest sleep, and again
        add_schedule(store, "late", "@every 7s")
        running.scheduler.changed()
        await trio.sleep(15)
        store.pause_schedule("late", True, now())
        running.scheduler.changed()
        await trio.sleep(30)
        store.pause_schedule("late", False, now())
        running.scheduler.changed()
        assert running.scheduler.next_firing("late") is None  # not read yet
        await trio.sleep(0)
        nursery.cancel_scope.cancel()
    # Added at 100: fires at 107 and 114; paused at 115; resumed at 145.
    assert due(store, "late") == [107, 114]
    assert running.scheduler.next_firing("late") == T0 + 149


async def test_idle_it_sleeps_long(store: Direct, autojump_clock: trio.testing.MockClock) -> None:
    """Nothing due: it reads nothing and wakes only for the wall-clock check."""
    add_schedule(store, "yearly", "@yearly")
    running = await run_for(store, 10 * MAX_SLEEP_SECONDS)
    assert running.writer.calls == 0
    assert due(store, "yearly") == []


async def test_shutting_down_adds_nothing(store: Direct, autojump_clock: trio.testing.MockClock) -> None:
    add_schedule(store)
    running = Running(store)
    running.accepting = False
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.run)
        await trio.sleep(25)
        nursery.cancel_scope.cancel()
    assert due(store) == []


async def test_a_firing_that_cannot_add_its_job_is_logged_and_the_next_one_comes(
    store: Direct, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_queue("night", None, now())
    store.add_schedule(
        schedules.new_schedule(
            "tick", "@every 10s", "UTC", new(queue="night"), no_overlap=False, catch_up="one", now=now()
        ),
        now(),
    )
    store.remove_queue("night")
    await run_for(store, 25)
    assert "schedule tick: the firing of" in caplog.text and "unknown queue 'night'" in caplog.text
    assert caplog.text.count("unknown queue") == 2  # 10 and 20: each tried once


async def test_a_store_that_cannot_be_read_is_read_again_and_the_start_catches_up(
    store: Direct, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL away at the start: the scheduler starts all the same, tries
    the read again, and the first read that works catches up as a start does."""
    from queued.store import StorageError

    add_schedule(store, catch_up="one")
    await trio.sleep(35)  # three firings pass before the daemon starts
    running = Running(store)
    failing = [True]
    read = running.writer.read

    async def flaky_read(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if failing[0]:
            raise StorageError("cannot reach the job store")
        return await read(fn, *args, **kwargs)

    running.writer.read = flaky_read  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.run)
        await trio.sleep(7)
        assert due(store) == []
        failing[0] = False
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert "schedules not read (cannot reach the job store)" in caplog.text
    # Read again at 35 + 5: the catch-up (the firing of 40 is missed by then), then 50.
    assert due(store) == [45, 50]
