"""Schedules: when a recurring job fires. Five-field cron expressions (Vixie
cron's syntax) and plain intervals (`--every 10m`), parsed into Structs, and
the firing times they give. Pure: `after` and `now` are passed in, the zone is
named and zoneinfo does the calendar.

Theory of operation
- A cron expression matches wall-clock minutes in the schedule's zone. Day of
  month and day of week combine as in Vixie cron: when both fields are
  restricted (neither starts with `*`) a day matches if EITHER does; otherwise
  both must match (so `*/2` in one field still means "and").
- Daylight saving, the one rule for both changes: a wall-clock time fires at
  most once per calendar day, at its first occurrence.
  * Spring forward: a matching wall time that does not exist that day (02:30
    in Europe/Berlin on the last Sunday of March) fires at the first instant
    after the gap (03:00 summer time); several skipped matches fire once.
  * Fall back: a matching wall time that occurs twice (02:30 on the last
    Sunday of October) fires at its first occurrence only.
  * Except expressions that run in every hour (the hour set is all 24 hours:
    `30 * * * *`, `*/5 * * * *`): they follow elapsed time, as Vixie cron's
    wildcard jobs do. The hour that does not exist has no firings, the hour
    that happens twice fires twice: an hourly job fires 23 times on the short
    day and 25 on the long one, always an hour apart.
- An interval fires at anchor + k * interval (k >= 1): the caller anchors it
  at the schedule's creation, so every node computes the same firing times.
- Missed firings (the daemon was down) are capped: `firings_missed` returns
  none, the latest one, or at most `cap` of the latest, never a burst.
"""

from __future__ import annotations

import math
import re
from datetime import MAXYEAR, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Struct

from queued.durations import format_duration_exact, parse_duration
from queued.protocol import MAX_MOMENT, MAX_SECONDS


class CronSchedule(Struct, frozen=True, kw_only=True):
    """A five-field expression; each field is the sorted values it matches."""

    expression: str  # as the user wrote it, whitespace collapsed
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]  # 0 is Sunday (7 is read as 0)
    day_of_month_restricted: bool  # the field does not start with `*` (Vixie's rule)
    day_of_week_restricted: bool


class IntervalSchedule(Struct, frozen=True, kw_only=True):
    """Fires every `seconds`, at anchor + k * seconds for k >= 1."""

    expression: str  # "@every 10m"
    seconds: float
    anchor: float


Schedule = CronSchedule | IntervalSchedule
CatchUp = Literal["none", "one", "all"]
CATCH_UP_CHOICES: tuple[CatchUp, ...] = ("none", "one", "all")
DEFAULT_CATCH_UP: CatchUp = "one"
# At most this many missed firings are added at the daemon's start with
# `--catch-up all`: the latest ones; older ones are dropped (and said so).
CATCH_UP_CAP = 10
MIN_INTERVAL = 1.0

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_TITLES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February as in a leap year
_FORM = (
    "minute hour day-of-month month day-of-week (e.g. '30 2 * * *'), "
    "@hourly, @daily, @weekly, @monthly, @yearly or @every 10m"
)
# Every expression that passes the parse fires within this many years (the
# rarest, 29 February on a given weekday, recurs within 40): a bound, not a loop.
_SEARCH_YEARS = 400
_NUMBER = re.compile(r"^\d+$")


class _Field(Struct, frozen=True):
    name: str
    plural: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the value of names[0]

    def allowed(self) -> str:
        text = f"{self.plural} are {self.low}-{self.high}"
        if self.name == "day-of-week":
            text += " (0 and 7 are Sunday)"
        if self.names:
            text += " or " + ", ".join(self.names)
        return text


_FIELDS = (
    _Field("minute", "minutes", 0, 59),
    _Field("hour", "hours", 0, 23),
    _Field("day-of-month", "days of the month", 1, 31),
    _Field("month", "months", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", "days of the week", 0, 7, DAY_NAMES, 0),
)


class _FieldError(ValueError):
    pass


def parse_schedule(text: str, *, anchor: float) -> Schedule:
    """A cron expression, a macro (@daily, ...) or `@every DURATION`.
    `anchor` (the schedule's creation time) places an interval's firings.
    Raises ValueError with a one-line reason in the user's words."""
    expression = " ".join(text.split())
    if not expression:
        raise ValueError(f"empty schedule: use {_FORM}")
    keyword, _, rest = expression.partition(" ")
    if keyword.lower() == "@every":
        if not rest:
            raise ValueError("@every needs a duration, e.g. '@every 10m'")
        return parse_every(rest, anchor=anchor)
    if expression.startswith("@"):
        fields = MACROS.get(expression.lower())
        if fields is None:
            if expression.lower() == "@reboot":
                raise ValueError(
                    "@reboot is not a schedule queued runs: add the job from the unit that boots"
                )
            raise ValueError(f"unknown schedule {expression!r}: use {_FORM}")
        return _parse_fields(expression, fields.split())
    parts = expression.split()
    if len(parts) != 5:
        extra = " (seconds and years are not cron fields here)" if len(parts) in (6, 7) else ""
        raise ValueError(
            f"invalid cron expression {expression!r}: {len(parts)} field{'s' if len(parts) != 1 else ''}"
            f"{extra}; use {_FORM}"
        )
    return _parse_fields(expression, parts)


def parse_every(text: str, *, anchor: float) -> IntervalSchedule:
    """`--every 10m`: an interval of at least a second."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"invalid interval {text.strip()!r}: use a duration such as 30s, 10m, 2h or 1d"
        ) from None
    if not MIN_INTERVAL <= seconds <= MAX_SECONDS:
        raise ValueError(f"invalid interval {text.strip()!r}: it must be from 1s to 10 years")
    if not math.isfinite(anchor):
        raise ValueError("an interval's anchor must be a time")
    return IntervalSchedule(
        expression=f"@every {format_duration_exact(seconds)}", seconds=seconds, anchor=anchor
    )


def _parse_fields(expression: str, parts: list[str]) -> CronSchedule:
    values = []
    for field, part in zip(_FIELDS, parts, strict=True):
        try:
            values.append(_parse_field(field, part))
        except _FieldError as error:
            raise ValueError(
                f"invalid cron expression {expression!r}: {field.name} field {part!r}: {error}"
            ) from None
    minutes, hours, days, months, weekdays = values
    schedule = CronSchedule(
        expression=expression,
        minutes=minutes,
        hours=hours,
        days_of_month=days,
        months=months,
        days_of_week=weekdays,
        day_of_month_restricted=not parts[2].startswith("*"),
        day_of_week_restricted=not parts[4].startswith("*"),
    )
    _refuse_never(schedule)
    return schedule


def _parse_field(field: _Field, text: str) -> tuple[int, ...]:
    matched: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError("an empty item in the list (two commas, or one at an end)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.match(step_text) or int(step_text) < 1:
                raise _FieldError(f"step {step_text!r} must be a whole number of 1 or more, as in */15")
            step = int(step_text)
        if base == "*":
            # Day of week: * is Sunday to Saturday once (7 is Sunday again).
            low, high = field.low, 6 if field.name == "day-of-week" else field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(field, first), _value(field, last)
            if field.name == "day-of-week" and high == 0 < low:
                high = 7  # "sat-sun" ends on Sunday, the week's 7th day
            if low > high:
                raise _FieldError(f"the range {base} runs backwards; write {last}-{first}, or a list")
        else:
            low = _value(field, base)
            # "a/n" is "a-max/n", as most crons read it; a bare value is itself.
            high = (6 if field.name == "day-of-week" else field.high) if slash else low
        matched.update(range(low, high + 1, step))
    if field.name == "day-of-week" and 7 in matched:
        matched.discard(7)
        matched.add(0)
    return tuple(sorted(matched))


def _value(field: _Field, text: str) -> int:
    if _NUMBER.match(text):
        value = int(text)
        if not field.low <= value <= field.high:
            raise _FieldError(f"{value} is out of range; {field.allowed()}")
        return value
    if field.names and text.lower() in field.names:
        return field.names.index(text.lower()) + field.name_base
    if not text:
        raise _FieldError(f"a range or step is missing a value; {field.allowed()}")
    quartz = text.strip("0123456789") in ("L", "W", "#", "?")
    what = "L, W, # and ? are not Vixie cron syntax; " if quartz else ""
    raise _FieldError(f"{text!r} is not a {field.name} value; {what}{field.allowed()}")


def _refuse_never(schedule: CronSchedule) -> None:
    """An expression whose days never occur (`0 0 31 2 *`) is refused here,
    not searched for forever. Only "day of month AND month" can be empty: when
    the day of month is `*`-like it includes the 1st, and every date falls on
    every weekday in some year; when both day fields are restricted a day
    matches on its weekday alone."""
    if not schedule.day_of_month_restricted or schedule.day_of_week_restricted:
        return
    if any(day <= _LONGEST_MONTH[month - 1] for month in schedule.months for day in schedule.days_of_month):
        return
    days = ", ".join(map(str, schedule.days_of_month))
    months = ", ".join(_MONTH_TITLES[month - 1] for month in schedule.months)
    raise ValueError(f"cron expression {schedule.expression!r} never fires: no day {days} in {months}")


def check_zone(name: str) -> ZoneInfo:
    """The zone named (IANA, e.g. Europe/Berlin or UTC), or ValueError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def local_zone_name(tz_variable: str | None, localtime_link: str | None) -> str:
    """The daemon's local zone, the default of `--tz`, as an IANA name: $TZ
    when it names one (":Europe/Berlin" too), else the zone /etc/localtime
    links to (its readlink, ".../zoneinfo/Europe/Berlin"), else UTC. A POSIX
    rule in $TZ ("CET-1CEST,M3.5.0,M10.5.0/3") names no zone and is passed over."""
    candidates = [(tz_variable or "").removeprefix(":")]
    if localtime_link and "zoneinfo/" in localtime_link:
        candidates.append(
            localtime_link.rsplit("zoneinfo/", 1)[1].removeprefix("posix/").removeprefix("right/")
        )
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                check_zone(name)
            except ValueError:
                continue
            return name
    return "UTC"


def matches(schedule: CronSchedule, wall: datetime) -> bool:
    """Whether the wall-clock minute `wall` (naive or aware) is one the expression names."""
    return (
        wall.minute in schedule.minutes
        and wall.hour in schedule.hours
        and wall.month in schedule.months
        and _day_matches(schedule, wall)
    )


def _day_matches(schedule: CronSchedule, day: datetime) -> bool:
    by_date = day.day in schedule.days_of_month
    by_weekday = day.isoweekday() % 7 in schedule.days_of_week
    if schedule.day_of_month_restricted and schedule.day_of_week_restricted:
        return by_date or by_weekday
    return by_date and by_weekday


def _first_match(schedule: CronSchedule, start: datetime) -> datetime:
    """The first naive wall-clock minute at or after `start` that matches."""
    moment = start.replace(second=0, microsecond=0)
    if moment < start:
        moment += timedelta(minutes=1)
    last_year = start.year + _SEARCH_YEARS
    while moment.year <= last_year:  # (datetime's OverflowError past 9999 ends the search too)
        if moment.month not in schedule.months:
            later = [month for month in schedule.months if month > moment.month]
            if moment.year == MAXYEAR and not later:
                raise OverflowError("past the year 9999")
            moment = datetime(moment.year + (not later), later[0] if later else schedule.months[0], 1)
            continue
        if not _day_matches(schedule, moment):
            moment = datetime(moment.year, moment.month, moment.day) + timedelta(days=1)
            continue
        if moment.hour not in schedule.hours:
            later = [hour for hour in schedule.hours if hour > moment.hour]
            if not later:
                moment = datetime(moment.year, moment.month, moment.day) + timedelta(days=1)
                continue
            moment = moment.replace(hour=later[0], minute=0)
        if moment.minute not in schedule.minutes:
            later = [minute for minute in schedule.minutes if minute > moment.minute]
            if not later:
                moment = moment.replace(minute=0) + timedelta(hours=1)
                continue
            moment = moment.replace(minute=later[0])
        return moment
    raise ValueError(f"cron expression {schedule.expression!r} does not fire within {_SEARCH_YEARS} years")


def _instants(wall: datetime, zone: ZoneInfo) -> tuple[float, float]:
    """The instants of naive `wall` read with fold 0 and fold 1: equal for an
    ordinary time, first < second for a time that happens twice, first >
    second for a time in a spring-forward gap (PEP 495)."""
    return wall.replace(tzinfo=zone, fold=0).timestamp(), wall.replace(tzinfo=zone, fold=1).timestamp()


def _gap_end(before: float, after: float, zone: ZoneInfo) -> float:
    """The instant the clock jumped forward, between `before` (still the old
    offset) and `after` (the new one): the first instant after the gap."""
    low, high = math.floor(before), math.ceil(after)
    old = datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == old:
            low = middle
        else:
            high = middle
    return float(high)


def next_firing(schedule: Schedule, after: float, tz: str) -> float:
    """The first firing strictly after `after` (seconds since the epoch), in
    zone `tz` (ignored by intervals). The daylight-saving rule is the module's.
    ValueError when there is none before the end of the year 9999."""
    if not 0 <= after <= MAX_MOMENT:  # also refuses nan
        raise ValueError(f"time {after!r} is out of range: 1970 to 9999")
    if isinstance(schedule, IntervalSchedule):
        count = max(1, math.floor((after - schedule.anchor) / schedule.seconds) + 1)
        firing = schedule.anchor + count * schedule.seconds
        while firing <= after:  # float rounding
            count += 1
            firing = schedule.anchor + count * schedule.seconds
    else:
        try:
            firing = _next_cron_firing(schedule, after, check_zone(tz))
        except OverflowError:
            firing = math.inf
    if firing > MAX_MOMENT:
        raise ValueError(f"schedule {schedule.expression!r} does not fire again before the year 10000")
    return firing


def _next_cron_firing(schedule: CronSchedule, after: float, zone: ZoneInfo) -> float:
    every_hour = len(schedule.hours) == 24
    # Whole seconds: fromtimestamp rounds to the nearest microsecond, which can
    # carry an instant just before a minute (or a gap's end) past it.
    now = datetime.fromtimestamp(math.floor(after), zone)
    wall = now.replace(tzinfo=None, second=0, microsecond=0)
    first, second = _instants(wall, zone)
    if first < second and now.fold == 0:
        # In the first pass of a repeated stretch: its earlier wall times come round again.
        wall -= timedelta(seconds=second - first)
    best = math.inf
    candidate = _first_match(schedule, wall)
    while True:
        first, second = _instants(candidate, zone)
        if first <= second:  # the wall time exists (once, or twice when first < second)
            if first >= best:
                return best  # every later wall time's instants are later still
            options: tuple[float, ...] = (first, second) if every_hour else (first,)
        else:  # skipped by a spring-forward gap
            options = () if every_hour else (_gap_end(second, first, zone),)
        for option in options:
            if after < option < best:
                best = option
        try:
            candidate = _first_match(schedule, candidate + timedelta(minutes=1))
        except OverflowError:
            if best == math.inf:
                raise
            return best  # no later wall time before the year 10000


class Missed(Struct, frozen=True, kw_only=True):
    """What the daemon does at its start for one schedule."""

    run: tuple[float, ...]  # firing times to add jobs for now, oldest first
    dropped: bool  # some missed firings are not in `run` (catch-up none or one, or the cap)
    upcoming: float  # the first firing after `now`: the schedule's next deadline


def firings_missed(
    schedule: Schedule,
    last: float,
    now: float,
    tz: str,
    catch_up: CatchUp = DEFAULT_CATCH_UP,
    cap: int = CATCH_UP_CAP,
) -> Missed:
    """The firings after `last` (the latest one added, or the schedule's
    creation) and at or before `now`, as `catch_up` chooses: none, the latest
    one, or all up to `cap` (the latest `cap`)."""
    if catch_up not in CATCH_UP_CHOICES:
        raise ValueError(f"invalid catch-up {catch_up!r}: use none, one or all")
    if cap < 1:
        raise ValueError(f"the catch-up cap must be 1 or more, got {cap}")
    upcoming = next_firing(schedule, now, tz)
    first_missed = next_firing(schedule, last, tz)
    if first_missed > now:
        return Missed(run=(), dropped=False, upcoming=upcoming)
    if catch_up == "none":
        return Missed(run=(), dropped=True, upcoming=upcoming)
    keep = 1 if catch_up == "one" else cap
    latest = _latest_firings(schedule, last, now, tz, keep)
    return Missed(run=latest, dropped=latest[0] != first_missed, upcoming=upcoming)


def _latest_firings(schedule: Schedule, last: float, now: float, tz: str, keep: int) -> tuple[float, ...]:
    """The latest `keep` firings in (last, now], found by looking back over a
    window that grows fourfold, then narrows by halves when it holds too many:
    each look enumerates at most 4 * keep firings, however long the stop."""
    limit = 4 * keep

    def look(window: float) -> tuple[list[float], bool]:
        """The firings in the window before `now`, and whether there were more than `limit`."""
        found: list[float] = []
        firing = next_firing(schedule, max(last, now - window), tz)
        while firing <= now:
            if len(found) == limit:
                return found, True
            found.append(firing)
            firing = next_firing(schedule, firing, tz)
        return found, False

    too_few, window = 0.0, 60.0 * keep
    while True:
        found, too_many = look(window)
        if not too_many and (len(found) >= keep or now - window <= last):
            return tuple(found[-keep:])
        if too_many:
            break
        too_few, window = window, window * 4
    # Between too_few and window lies a window holding keep to limit firings:
    # firings are at least a second apart, so halving to half a second finds it.
    while window - too_few > 0.5:
        middle = (too_few + window) / 2
        found, too_many = look(middle)
        if not too_many and len(found) >= keep:
            return tuple(found[-keep:])
        too_few, window = (too_few, middle) if too_many else (middle, window)
    return tuple(look(too_few)[0])  # not reached: the latest firings, if fewer
