"""Schedules: cron parsing, next firing across daylight-saving changes, leap
days, intervals and the catch-up after a stop."""

from __future__ import annotations

import functools
import itertools
import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from queued.cron import (
    CATCH_UP_CAP,
    CronSchedule,
    IntervalSchedule,
    check_zone,
    firings_missed,
    local_zone_name,
    matches,
    next_firing,
    parse_every,
    parse_schedule,
)


def cron(text: str) -> CronSchedule:
    schedule = parse_schedule(text, anchor=0.0)
    assert isinstance(schedule, CronSchedule)
    return schedule


def at(text: str, tz: str) -> float:
    """The instant of an ISO wall time (with an offset to pick a fold, or naive)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment.timestamp()


def wall(instant: float, tz: str) -> str:
    return datetime.fromtimestamp(instant, ZoneInfo(tz)).isoformat()


def chain(expression: str, start: str, tz: str, count: int) -> list[str]:
    schedule = parse_schedule(expression, anchor=at(start, tz))
    instant = at(start, tz)
    walls = []
    for _ in range(count):
        instant = next_firing(schedule, instant, tz)
        walls.append(wall(instant, tz))
    return walls


# --- parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes", "hours", "days", "months", "weekdays"),
    [
        ("* * * * *", range(60), range(24), range(1, 32), range(1, 13), range(7)),
        ("*/15 9-17 * * 1-5", [0, 15, 30, 45], range(9, 18), range(1, 32), range(1, 13), range(1, 6)),
        ("0,30 */6 1,15 */3 *", [0, 30], [0, 6, 12, 18], [1, 15], [1, 4, 7, 10], range(7)),
        ("5-20/5 0 * jan-mar mon,WED,fri", [5, 10, 15, 20], [0], range(1, 32), [1, 2, 3], [1, 3, 5]),
        ("0 0 * * 7", [0], [0], range(1, 32), range(1, 13), [0]),
        ("0 0 * * 5-7", [0], [0], range(1, 32), range(1, 13), [0, 5, 6]),
        ("0 0 * * sat-sun", [0], [0], range(1, 32), range(1, 13), [0, 6]),
        ("0 0 * DEC *", [0], [0], range(1, 32), [12], range(7)),
        ("10/20 * * * *", [10, 30, 50], range(24), range(1, 32), range(1, 13), range(7)),
        ("0 0 * * */2", [0], [0], range(1, 32), range(1, 13), [0, 2, 4, 6]),
        ("  0   12  *  *  *  ", [0], [12], range(1, 32), range(1, 13), range(7)),
    ],
)
def test_parse_fields(text, minutes, hours, days, months, weekdays) -> None:
    schedule = cron(text)
    assert schedule.minutes == tuple(minutes)
    assert schedule.hours == tuple(hours)
    assert schedule.days_of_month == tuple(days)
    assert schedule.months == tuple(months)
    assert schedule.days_of_week == tuple(weekdays)


@pytest.mark.parametrize(
    ("macro", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros(macro: str, fields: str) -> None:
    schedule, expanded = cron(macro), cron(fields)
    assert schedule.expression == macro
    assert (
        schedule.minutes,
        schedule.hours,
        schedule.days_of_month,
        schedule.months,
        schedule.days_of_week,
    ) == (
        expanded.minutes,
        expanded.hours,
        expanded.days_of_month,
        expanded.months,
        expanded.days_of_week,
    )


def test_expression_is_kept_as_written_with_spaces_collapsed() -> None:
    assert cron(" 0  2 * *   1 ").expression == "0 2 * * 1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty schedule"),
        ("* * * *", "4 fields; use minute hour day-of-month month day-of-week"),
        ("0 * * * * *", "6 fields (seconds and years are not cron fields here)"),
        ("60 * * * *", "minute field '60': 60 is out of range; minutes are 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range; hours are 0-23"),
        ("* * 0 * *", "day-of-month field '0': 0 is out of range; days of the month are 1-31"),
        ("* * 32 * *", "day-of-month field '32'"),
        ("* * * 13 *", "month field '13': 13 is out of range; months are 1-12 or jan, feb"),
        (
            "* * * * 8",
            "day-of-week field '8': 8 is out of range; days of the week are 0-7 (0 and 7 are Sunday)",
        ),
        ("* * * foo *", "month field 'foo': 'foo' is not a month value"),
        ("* * * * monday", "'monday' is not a day-of-week value"),
        ("5-2 * * * *", "the range 5-2 runs backwards"),
        ("*/0 * * * *", "step '0' must be a whole number of 1 or more"),
        ("*/x * * * *", "step 'x'"),
        ("1,,2 * * * *", "an empty item in the list"),
        ("1, * * * *", "an empty item in the list"),
        ("1- * * * *", "a range or step is missing a value"),
        ("* * L * *", "L, W, # and ? are not Vixie cron syntax"),
        ("* * ? * *", "L, W, # and ? are not Vixie cron syntax"),
        ("-1 * * * *", "minute field '-1'"),
        ("@reboot", "@reboot is not a schedule queued runs"),
        ("@fortnightly", "unknown schedule '@fortnightly'"),
        ("@everyday", "unknown schedule '@everyday'"),
        ("@every", "@every needs a duration"),
        ("@every soon", "invalid interval 'soon'"),
        ("@every 0s", "it must be from 1s to 10 years"),
        ("@every 500ms", "it must be from 1s to 10 years"),
        ("@every 600w", "it must be from 1s to 10 years"),
    ],
)
def test_refusals_are_one_line_reasons(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_schedule(text, anchor=0.0)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0 0 31 2 *", "never fires: no day 31 in February"),
        ("0 0 30,31 2 *", "no day 30, 31 in February"),
        ("0 0 31 4,6,9,11 *", "no day 31 in April, June, September, November"),
        ("0 0 31 apr *", "no day 31 in April"),
    ],
)
def test_expressions_that_never_fire_are_refused_at_parse_time(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_schedule(text, anchor=0.0)


@pytest.mark.parametrize(
    "text", ["0 0 29 2 *", "0 0 30 2,3 *", "0 0 31 2 mon", "0 0 29 2 */7", "0 0 */31 2 *"]
)
def test_rare_but_possible_expressions_are_accepted(text: str) -> None:
    schedule = parse_schedule(text, anchor=0.0)
    assert next_firing(schedule, at("2026-01-01T00:00", "UTC"), "UTC") > 0


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Berln': use an IANA name"):
        check_zone("Europe/Berln")
    for bad in ("", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ValueError, match="unknown time zone"):
            next_firing(cron("@daily"), 0.0, bad)


@pytest.mark.parametrize(
    ("tz_variable", "link", "zone"),
    [
        ("Europe/Berlin", "/usr/share/zoneinfo/America/New_York", "Europe/Berlin"),
        (":Asia/Tokyo", None, "Asia/Tokyo"),
        (None, "/usr/share/zoneinfo/America/New_York", "America/New_York"),
        ("", "../usr/share/zoneinfo/posix/Europe/Paris", "Europe/Paris"),
        ("CET-1CEST,M3.5.0,M10.5.0/3", "/usr/share/zoneinfo/Etc/UTC", "Etc/UTC"),
        ("Nowhere/Atlantis", "/etc/some-file", "UTC"),
        ("/etc/localtime", None, "UTC"),
        (None, None, "UTC"),
    ],
)
def test_local_zone_name(tz_variable, link, zone) -> None:
    assert local_zone_name(tz_variable, link) == zone


# --- next firing: ordinary days ------------------------------------------


def test_next_firing_is_strictly_after() -> None:
    schedule = cron("*/15 * * * *")
    start = at("2026-05-01T10:15:00", "UTC")
    assert wall(next_firing(schedule, start, "UTC"), "UTC") == "2026-05-01T10:30:00+00:00"
    assert wall(next_firing(schedule, start - 0.001, "UTC"), "UTC") == "2026-05-01T10:15:00+00:00"
    assert wall(next_firing(schedule, start + 59.9, "UTC"), "UTC") == "2026-05-01T10:30:00+00:00"


def test_rolls_over_hours_days_months_and_years() -> None:
    assert chain("59 23 31 12 *", "2026-12-31T23:58", "UTC", 2) == [
        "2026-12-31T23:59:00+00:00",
        "2027-12-31T23:59:00+00:00",
    ]
    assert chain("0 0 1 * *", "2026-01-31T12:00", "UTC", 2) == [
        "2026-02-01T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 13th OR a Friday.
    assert chain("0 0 13 * 5", "2026-03-01T00:00", "UTC", 4) == [
        "2026-03-06T00:00:00+00:00",
        "2026-03-13T00:00:00+00:00",
        "2026-03-20T00:00:00+00:00",
        "2026-03-27T00:00:00+00:00",
    ]
    assert chain("0 0 1 * mon", "2026-05-26T00:00", "UTC", 3) == [
        "2026-06-01T00:00:00+00:00",  # a Monday and the 1st: once
        "2026-06-08T00:00:00+00:00",
        "2026-06-15T00:00:00+00:00",
    ]


def test_a_field_starting_with_star_combines_with_and() -> None:
    # Vixie's rule: "*/2" is star-like, so odd days AND Mondays.
    walls = chain("0 0 */2 * 1", "2026-03-01T00:00", "UTC", 3)
    assert walls == ["2026-03-09T00:00:00+00:00", "2026-03-23T00:00:00+00:00", "2026-04-13T00:00:00+00:00"]


# --- leap days -----------------------------------------------------------


def test_leap_day() -> None:
    assert chain("0 0 29 2 *", "2025-01-01T00:00", "UTC", 3) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
        "2036-02-29T00:00:00+00:00",
    ]


def test_leap_day_skips_a_century_that_is_not_a_leap_year() -> None:
    assert chain("0 0 29 2 *", "2097-01-01T00:00", "UTC", 2) == [
        "2104-02-29T00:00:00+00:00",
        "2108-02-29T00:00:00+00:00",
    ]
    assert chain("0 0 29 2 *", "1999-03-01T00:00", "UTC", 1) == ["2000-02-29T00:00:00+00:00"]


def test_leap_day_on_a_sunday_decades_apart() -> None:
    # */7 on day of week is star-like: 29 February AND a Sunday.
    assert chain("0 0 29 2 */7", "2026-01-01T00:00", "UTC", 2) == [
        "2032-02-29T00:00:00+00:00",
        "2060-02-29T00:00:00+00:00",
    ]


# --- daylight saving -------------------------------------------------------


def per_day(expression: str, tz: str, first_day: str, days: int) -> dict[str, list[str]]:
    """Firings grouped by local date over `days` days from `first_day`."""
    schedule = cron(expression)
    instant = at(first_day + "T00:00", tz) - 1
    end = at((datetime.fromisoformat(first_day) + timedelta(days=days)).isoformat(), tz)
    grouped: dict[str, list[str]] = {}
    while True:
        instant = next_firing(schedule, instant, tz)
        if instant >= end:
            return grouped
        text = wall(instant, tz)
        grouped.setdefault(text[:10], []).append(text[11:])


@pytest.mark.parametrize(
    ("tz", "day", "times"),
    [
        # 02:30 does not exist: it fires once, at the first instant after the gap.
        ("Europe/Berlin", "2026-03-29", ["03:00:00+02:00"]),
        ("America/New_York", "2026-03-08", ["03:00:00-04:00"]),
        # 02:30 (Berlin) happens twice: it fires once, the first time.
        ("Europe/Berlin", "2026-10-25", ["02:30:00+02:00"]),
        # 02:30 in New York is after the repeated hour (01:00-01:59): ordinary.
        ("America/New_York", "2026-11-01", ["02:30:00-05:00"]),
    ],
)
def test_daily_0230_runs_once_on_both_transition_days(tz: str, day: str, times: list[str]) -> None:
    start = (datetime.fromisoformat(day) - timedelta(days=2)).date().isoformat()
    grouped = per_day("30 2 * * *", tz, start, 5)
    assert len(grouped) == 5
    assert all(len(firings) == 1 for firings in grouped.values())
    assert grouped[day] == times
    before = (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()
    assert grouped[before][0][:8] == "02:30:00"


def test_new_york_repeated_hour_fires_once_for_a_fixed_time() -> None:
    grouped = per_day("30 1 * * *", "America/New_York", "2026-10-31", 3)
    assert grouped == {
        "2026-10-31": ["01:30:00-04:00"],
        "2026-11-01": ["01:30:00-04:00"],  # not again at 01:30 EST
        "2026-11-02": ["01:30:00-05:00"],
    }


def test_several_times_in_the_gap_fire_once_after_it() -> None:
    grouped = per_day("*/20 2 * * *", "Europe/Berlin", "2026-03-28", 3)
    assert grouped["2026-03-28"] == ["02:00:00+01:00", "02:20:00+01:00", "02:40:00+01:00"]
    assert grouped["2026-03-29"] == ["03:00:00+02:00"]
    assert grouped["2026-03-30"] == ["02:00:00+02:00", "02:20:00+02:00", "02:40:00+02:00"]


def test_an_instant_a_hair_before_the_gap_s_end_still_fires_at_it() -> None:
    # 2025-03-30 03:00 CEST, the end of Berlin's gap; fromtimestamp would round
    # 0.1 microseconds before it up to it, and the gap's firing was skipped (found by
    # hypothesis).
    gap_end = at("2025-03-30T03:00:00", "Europe/Berlin")
    assert next_firing(cron("* */2 * * *"), gap_end - 1.192092896e-07, "Europe/Berlin") == gap_end


def test_a_time_in_the_repeated_hour_fires_at_its_first_occurrence_only() -> None:
    grouped = per_day("*/20 2 * * *", "Europe/Berlin", "2026-10-25", 1)
    assert grouped["2026-10-25"] == ["02:00:00+02:00", "02:20:00+02:00", "02:40:00+02:00"]


@pytest.mark.parametrize(
    ("tz", "short_day", "long_day"),
    [("Europe/Berlin", "2026-03-29", "2026-10-25"), ("America/New_York", "2026-03-08", "2026-11-01")],
)
def test_every_hour_jobs_follow_elapsed_time(tz: str, short_day: str, long_day: str) -> None:
    short = per_day("30 * * * *", tz, short_day, 1)[short_day]
    long = per_day("30 * * * *", tz, long_day, 1)[long_day]
    assert (len(short), len(long)) == (23, 25)
    for day, firings in ((short_day, short), (long_day, long)):
        instants = [at(f"{day}T{text}", tz) for text in firings]
        assert all(later - earlier == 3600 for earlier, later in itertools.pairwise(instants))


def test_a_midnight_gap_moves_midnight_to_one() -> None:
    # Chile springs forward at midnight: 00:00 does not exist on 2026-09-06.
    grouped = per_day("0 0 * * *", "America/Santiago", "2026-09-05", 3)
    assert grouped == {
        "2026-09-05": ["00:00:00-04:00"],
        "2026-09-06": ["01:00:00-03:00"],
        "2026-09-07": ["00:00:00-03:00"],
    }


def test_half_hour_daylight_saving() -> None:
    # Lord Howe Island moves its clocks by 30 minutes: 02:00-02:29 is skipped.
    grouped = per_day("15 2 * * *", "Australia/Lord_Howe", "2026-10-03", 3)
    assert grouped["2026-10-04"] == ["02:30:00+11:00"]
    assert grouped["2026-10-05"] == ["02:15:00+11:00"]


# --- intervals -------------------------------------------------------------


def test_every_interval_keeps_to_its_anchor() -> None:
    schedule = parse_every("10m", anchor=1000.0)
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.expression == "@every 10m"
    assert next_firing(schedule, 1000.0, "UTC") == 1600.0
    assert next_firing(schedule, 1599.9, "UTC") == 1600.0
    assert next_firing(schedule, 1600.0, "UTC") == 2200.0
    assert next_firing(schedule, 0.0, "UTC") == 1600.0  # never before anchor + interval
    assert next_firing(schedule, 1000.0 + 600 * 1_000_000 + 1, "Europe/Berlin") == 1000.0 + 600 * 1_000_001


def test_every_in_the_expression_and_compound_durations() -> None:
    schedule = parse_schedule("@every 1h30m", anchor=0.0)
    assert isinstance(schedule, IntervalSchedule)
    assert (schedule.seconds, schedule.expression) == (5400.0, "@every 1h30m")
    assert parse_schedule("@every   90s", anchor=0.0).expression == "@every 1m30s"


def test_every_ignores_daylight_saving() -> None:
    anchor = at("2026-03-29T01:00", "Europe/Berlin")
    schedule = parse_every("1h", anchor=anchor)
    firing = next_firing(schedule, anchor, "Europe/Berlin")
    assert firing - anchor == 3600
    assert wall(firing, "Europe/Berlin") == "2026-03-29T03:00:00+02:00"


@given(
    seconds=st.floats(min_value=1, max_value=86400 * 30),
    anchor=st.floats(min_value=0, max_value=4e9),
    after=st.floats(min_value=0, max_value=4e9),
)
def test_every_is_strictly_after_and_on_the_grid(seconds: float, anchor: float, after: float) -> None:
    schedule = IntervalSchedule(expression="x", seconds=seconds, anchor=anchor)
    firing = next_firing(schedule, after, "UTC")
    assert firing > after
    assert firing >= anchor + seconds * 0.999999
    count = round((firing - anchor) / seconds)
    assert count >= 1
    assert math.isclose(firing, anchor + count * seconds, rel_tol=1e-12, abs_tol=1e-6)
    assert firing - seconds <= max(after, anchor) + 1e-6


# --- catch-up after a stop -------------------------------------------------


def test_nothing_missed() -> None:
    schedule = cron("0 * * * *")
    last = at("2026-05-01T10:00", "UTC")
    missed = firings_missed(schedule, last, last + 1800, "UTC", "all")
    assert (missed.run, missed.dropped, missed.upcoming) == ((), False, last + 3600)


@pytest.mark.parametrize(
    ("catch_up", "run_hours", "dropped"),
    [("none", [], True), ("one", [13], True), ("all", [11, 12, 13], False)],
)
def test_catch_up_choices(catch_up, run_hours, dropped) -> None:
    schedule = cron("0 * * * *")
    last = at("2026-05-01T10:00", "UTC")
    now = at("2026-05-01T13:20", "UTC")
    missed = firings_missed(schedule, last, now, "UTC", catch_up)
    assert [int(wall(t, "UTC")[11:13]) for t in missed.run] == run_hours
    assert missed.dropped is dropped
    assert wall(missed.upcoming, "UTC") == "2026-05-01T14:00:00+00:00"


def test_a_firing_exactly_at_now_is_missed_not_upcoming() -> None:
    schedule = cron("0 * * * *")
    now = at("2026-05-01T13:00", "UTC")
    missed = firings_missed(schedule, now - 3600, now, "UTC", "all")
    assert missed.run == (now,)
    assert missed.upcoming == now + 3600


def test_catch_up_all_is_capped_to_the_latest() -> None:
    schedule = cron("* * * * *")
    last = at("2026-05-01T00:00", "UTC")
    now = at("2026-05-08T00:00:30", "UTC")  # a week of minutes missed
    missed = firings_missed(schedule, last, now, "UTC", "all")
    assert len(missed.run) == CATCH_UP_CAP
    assert missed.dropped
    assert wall(missed.run[-1], "UTC") == "2026-05-08T00:00:00+00:00"
    assert [b - a for a, b in zip(missed.run, missed.run[1:], strict=False)] == [60.0] * (CATCH_UP_CAP - 1)
    assert firings_missed(schedule, last, now, "UTC", "all", cap=3).run == missed.run[-3:]


def test_a_year_down_with_a_one_second_interval_is_no_burst() -> None:
    schedule = parse_every("1s", anchor=0.0)
    now = 365 * 86400.0 + 0.5
    missed = firings_missed(schedule, 0.0, now, "UTC", "all")
    assert missed.run == tuple(float(365 * 86400 - 9 + i) for i in range(10))
    assert missed.dropped
    assert missed.upcoming == 365 * 86400.0 + 1


def test_the_latest_firings_after_a_dense_burst_long_ago() -> None:
    schedule = cron("* * * 1 *")  # every minute of January
    missed = firings_missed(
        schedule, at("2025-12-01T00:00", "UTC"), at("2026-05-01T00:00", "UTC"), "UTC", "all"
    )
    assert [wall(t, "UTC")[:16] for t in missed.run] == [
        f"2026-01-31T23:{minute}" for minute in range(50, 60)
    ]
    assert missed.dropped
    one = firings_missed(schedule, at("2025-12-01T00:00", "UTC"), at("2026-05-01T00:00", "UTC"), "UTC", "one")
    assert one.run == missed.run[-1:]


def test_sparse_firings_after_a_long_stop() -> None:
    schedule = cron("0 0 29 2 *")
    missed = firings_missed(
        schedule, at("2019-01-01T00:00", "UTC"), at("2026-05-01T00:00", "UTC"), "UTC", "all"
    )
    assert [wall(t, "UTC")[:10] for t in missed.run] == ["2020-02-29", "2024-02-29"]
    assert not missed.dropped


def test_catch_up_refusals() -> None:
    with pytest.raises(ValueError, match="invalid catch-up 'some': use none, one or all"):
        firings_missed(cron("@daily"), 0.0, 1.0, "UTC", "some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cap must be 1 or more"):
        firings_missed(cron("@daily"), 0.0, 1.0, "UTC", "all", cap=0)


# --- property: next_firing against a minute-by-minute reference -----------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kathmandu",
]
FIELD_CHOICES = [
    ["*", "*/5", "*/15", "0", "30", "0,30", "10-20/5", "59", "*/7"],
    ["*", "*", "*", "*/2", "2", "1", "0-3", "1,2,3", "2-3", "*/3", "0", "23"],
    ["*", "1", "15", "*/2", "29", "1-7", "31", "8-14"],
    ["*", "2", "3,10", "*/3", "nov", "3-4,9-11"],
    ["*", "0", "1-5", "sun", "7", "*/2", "6"],
]


@functools.cache
def transitions(tz: str) -> list[float]:
    """The instants `tz` changed its offset in 2025-2027."""
    zone = ZoneInfo(tz)

    def offset(instant: float) -> timedelta | None:
        return datetime.fromtimestamp(instant, zone).utcoffset()

    found = []
    start = datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    for day in range(3 * 366):
        low, high = start + day * 86400, start + (day + 1) * 86400
        if offset(low) != offset(high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(high)
    return found or [start + 180 * 86400]


def reference_firings(schedule: CronSchedule, tz: str, start: float, end: float) -> list[float]:
    """The module's rule, minute by minute in real time (offsets here are whole minutes)."""
    zone = ZoneInfo(tz)
    every_hour = len(schedule.hours) == 24
    found = []
    instant = math.floor(start / 60) * 60 + 60
    while instant <= end:
        now = datetime.fromtimestamp(instant, zone)
        before = datetime.fromtimestamp(instant - 60, zone)
        fires = matches(schedule, now) and (every_hour or now.fold == 0)
        if not fires and not every_hour and now.utcoffset() > before.utcoffset():
            # Just after a spring-forward gap: did it skip a matching wall time?
            skipped = before.replace(tzinfo=None) + timedelta(minutes=1)
            while skipped < now.replace(tzinfo=None):
                fires = fires or matches(schedule, skipped)
                skipped += timedelta(minutes=1)
        if fires:
            found.append(float(instant))
        instant += 60
    return found


@settings(max_examples=150, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    fields=st.tuples(*(st.sampled_from(choices) for choices in FIELD_CHOICES)),
    which=st.integers(min_value=0, max_value=10),
    before=st.floats(min_value=0, max_value=6 * 3600),
    after=st.floats(min_value=0, max_value=6 * 3600),
)
def test_next_firing_is_increasing_and_matches_the_rule(tz, fields, which, before, after) -> None:
    """Over a window around a daylight-saving change (or any time in a zone
    without one), the firings next_firing chains are exactly the reference's."""
    try:
        schedule = cron(" ".join(fields))
    except ValueError:
        assume(False)
        raise
    near = transitions(tz)
    change = near[which % len(near)]
    start, end = change - before, change + after
    firings = []
    instant = start
    while True:
        instant = next_firing(schedule, instant, tz)
        assert instant > (firings[-1] if firings else start)
        if instant > end:
            break
        firings.append(instant)
    assert firings == reference_firings(schedule, tz, start, end)


@pytest.mark.parametrize(
    "tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
)
@pytest.mark.parametrize(
    "expression", ["10,40 * * * *", "*/15 * * * *", "30 2 * * *", "*/20 0-3 * * *", "0 0 * * *", "* 2 * * *"]
)
def test_rule_around_every_change(tz: str, expression: str) -> None:
    """Every change of 2025-2027 in zones with both kinds of change, against the reference."""
    schedule = cron(expression)
    for change in transitions(tz):
        start, end = change - 4 * 3600, change + 4 * 3600
        firings, instant = [], start
        while (instant := next_firing(schedule, instant, tz)) <= end:
            firings.append(instant)
        assert firings == reference_firings(schedule, tz, start, end), wall(change, tz)


def test_times_out_of_range_and_the_end_of_time() -> None:
    for bad in (math.nan, math.inf, -1.0, 1e20):
        with pytest.raises(ValueError, match="is out of range: 1970 to 9999"):
            next_firing(cron("@daily"), bad, "UTC")
    last_leap_day = at("9996-02-29T00:00", "UTC")
    assert next_firing(cron("0 0 29 2 *"), last_leap_day - 1, "UTC") == last_leap_day
    for schedule in (cron("0 0 29 2 *"), parse_every("1d", anchor=0.0)):
        with pytest.raises(ValueError, match="does not fire again before the year 10000"):
            next_firing(schedule, at("9999-12-31T12:00", "UTC"), "Pacific/Kiritimati")


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.lists(st.sampled_from("0123456789*/,-@ abcdejmnorstuwLW#?"), max_size=30).map("".join),
    )
)
def test_any_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        schedule = parse_schedule(text, anchor=0.0)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert next_firing(schedule, at("2026-01-01T00:00", "UTC"), "Europe/Berlin") > 0
