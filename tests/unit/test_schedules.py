"""The pure rules of schedules (queued/schedules.py): checking a new one,
its next firing, catch-up at start and after a late wake, and no-overlap.
`now` is always passed in."""

from __future__ import annotations

import pytest

from queued import lifecycle, schedules
from queued.cron import CATCH_UP_CAP
from tests.store_harness import new

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def every(seconds: int, anchor: float = T0):
    return schedules.parse(f"@every {seconds}s", anchor)


def test_new_schedule_is_checked_and_normalized() -> None:
    made = schedules.new_schedule(
        "backup", "@every 600s", "Europe/Berlin", new(), no_overlap=True, catch_up="all", now=T0
    )
    assert (made.name, made.expression, made.tz, made.no_overlap, made.catch_up) == (
        "backup",
        "@every 10m",
        "Europe/Berlin",
        True,
        "all",
    )


@pytest.mark.parametrize(
    ("expression", "tz", "job", "reason"),
    [
        ("61 * * * *", "UTC", {}, "minute field '61': 61 is out of range"),
        ("@daily", "Mars/Base", {}, "unknown time zone 'Mars/Base'"),
        ("0 0 30 2 *", "UTC", {}, "never fires"),
        ("@every 0s", "UTC", {}, "from 1s to 10 years"),
        ("@daily", "UTC", {"after": [3]}, "cannot wait for other jobs"),
        ("@daily", "UTC", {"hold": True}, "pause the schedule instead"),
        ("@daily", "UTC", {"label": "other"}, "labelled with its name"),
    ],
)
def test_new_schedule_refusals(expression: str, tz: str, job: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        schedules.new_schedule("backup", expression, tz, new(**job), no_overlap=False, catch_up="one", now=T0)


def test_new_schedule_refuses_an_unknown_catch_up() -> None:
    with pytest.raises(ValueError, match="use none, one or all"):
        schedules.new_schedule("b", "@daily", "UTC", new(), no_overlap=False, catch_up="some", now=T0)  # type: ignore[arg-type]


def test_upcoming_counts_from_the_latest_firing_or_the_resume() -> None:
    schedule = every(10)
    assert schedules.upcoming(schedule, "UTC", T0, None, T0) == T0 + 10
    assert schedules.upcoming(schedule, "UTC", T0, T0 + 30, T0 + 25) == T0 + 40  # recorded ahead of us
    assert schedules.upcoming(schedule, "UTC", T0 + 55, None, T0 + 55) == T0 + 60  # resumed at 55
    assert schedules.upcoming(schedule, "UTC", T0, T0 + 10, T0 + 34) == T0 + 40


def test_upcoming_is_none_past_the_end_of_time() -> None:
    yearly = schedules.parse("@yearly", T0)
    assert schedules.upcoming(yearly, "UTC", T0, None, 253_402_300_000.0) is None


@pytest.mark.parametrize(
    ("catch_up", "run"),
    [("none", ()), ("one", (T0 + 30,)), ("all", (T0 + 10, T0 + 20, T0 + 30))],
)
def test_at_start_catches_up_the_firings_missed_as_chosen(catch_up: str, run: tuple) -> None:
    """Down from just after the creation to T0 + 35: three firings missed."""
    missed = schedules.at_start(every(10), "UTC", T0, None, catch_up, T0 + 35)  # type: ignore[arg-type]
    assert missed.run == run
    assert missed.upcoming == T0 + 40
    assert missed.dropped == (catch_up != "all")


def test_at_start_after_the_latest_firing_recorded() -> None:
    missed = schedules.at_start(every(10), "UTC", T0, T0 + 20, "all", T0 + 35)
    assert (missed.run, missed.upcoming) == ((T0 + 30,), T0 + 40)
    assert schedules.at_start(every(10), "UTC", T0, T0 + 30, "one", T0 + 35).run == ()


def test_at_start_paused_time_is_not_caught_up() -> None:
    """Resumed at T0 + 32: the firings before it are not missed ones."""
    missed = schedules.at_start(every(10), "UTC", T0 + 32, T0 + 10, "all", T0 + 45)
    assert missed.run == (T0 + 40,)


def test_catch_up_all_is_capped_after_a_long_stop() -> None:
    missed = schedules.at_start(every(1), "UTC", T0, None, "all", T0 + 86_400 * 30)
    assert len(missed.run) == CATCH_UP_CAP
    assert missed.run[-1] == T0 + 86_400 * 30 and missed.dropped


def test_when_due_on_time_fires_the_one_waited_for() -> None:
    due = schedules.when_due(every(10), "UTC", T0 + 10, "all", T0 + 10.004)
    assert (due.run, due.dropped, due.upcoming) == ((T0 + 10,), False, T0 + 20)


@pytest.mark.parametrize(
    ("catch_up", "run"),
    [
        ("none", (T0 + 10,)),
        ("one", (T0 + 10, T0 + 40)),
        ("all", (T0 + 10, T0 + 20, T0 + 30, T0 + 40)),
    ],
)
def test_when_due_after_a_long_sleep_catches_up_the_rest_as_chosen(catch_up: str, run: tuple) -> None:
    """Woken at T0 + 45 for the firing of T0 + 10 (the machine was suspended)."""
    due = schedules.when_due(every(10), "UTC", T0 + 10, catch_up, T0 + 45)  # type: ignore[arg-type]
    assert due.run == run
    assert due.upcoming == T0 + 50


@pytest.mark.parametrize("state", lifecycle.STATES)
def test_no_overlap_skips_while_the_latest_job_is_unfinished(state: str) -> None:
    assert schedules.skips_for_overlap(True, state) == (state in lifecycle.UNFINISHED_STATES)  # type: ignore[arg-type]
    assert not schedules.skips_for_overlap(False, state)  # type: ignore[arg-type]


def test_no_overlap_fires_without_a_latest_job() -> None:
    assert not schedules.skips_for_overlap(True, None)


def test_a_daily_0230_in_berlin_fires_once_on_both_change_days() -> None:
    """The rule the scheduler relies on, through the pure core: the day 02:30
    does not exist it fires at 03:00 summer time; the day it happens twice, once."""
    daily = schedules.parse("30 2 * * *", T0)
    spring = 1_711_846_800.0  # 2024-03-31T01:00:00Z: 03:00 CEST, the gap's end
    before_spring = spring - 86_400
    first = schedules.upcoming(daily, "Europe/Berlin", before_spring, None, before_spring + 3600)
    assert first == spring
    autumn_first = 1_729_989_000.0  # 2024-10-27T00:30:00Z: 02:30 CEST, the first 02:30
    fired = schedules.upcoming(daily, "Europe/Berlin", T0, None, autumn_first - 60)
    assert fired == autumn_first
    after = schedules.upcoming(daily, "Europe/Berlin", T0, autumn_first, autumn_first)
    assert after == autumn_first + 86_400 + 3600  # the next day's 02:30 CET, not the second 02:30
