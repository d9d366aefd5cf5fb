"""Schedules' rules, pure (`now` is passed in): a schedule as a user asks for
it, checked (`new_schedule`); when a stored one fires next (`upcoming`); what
the daemon fires when it starts or wakes late (catch-up); whether a firing
adds a job (no-overlap). The calendar is cron.py's.

Theory of operation
- A schedule stores the job each firing adds (command, queue, priority,
  retries, timeout, cwd and environment, captured when it was added); the job
  is an ordinary one, labelled with the schedule's name, due at the firing's
  time. It is added AHEAD_SECONDS before that time: the add's commit and the
  supervisor's read of it are done by then, and it starts on time as any
  delayed job does, not a commit and a read late.
- Firing times are the schedule's own (cron.next_firing, an interval anchored
  at the schedule's creation): every node computes the same ones, so that the
  store can make sure each is added once (its UNIQUE (schedule, firing)).
- Firings count after `since` (the schedule's creation, or its last resume:
  firings a paused schedule passed are not caught up) and after the latest
  firing recorded.
- A daemon that was down missed the firings in between: at its start it adds
  none, the latest one, or the latest few (at most cron.CATCH_UP_CAP), as the
  schedule's catch-up says. A daemon that woke late (the machine slept) treats
  the firings it overslept the same way, after the one it waited for.
- `--no-overlap`: a firing is skipped (recorded, no job) while the job of the
  schedule's latest firing is unfinished at the firing's time. Asked ahead,
  while that job still runs, the store answers "early" and records nothing:
  the job may end in the meantime, so the firing is decided at its time.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from queued import cron, lifecycle
from queued.cron import CatchUp, Missed
from queued.lifecycle import JobState
from queued.validation import NewJob

# What one firing did (`Store.fire_schedule`'s outcome).
Outcome = Literal["added", "taken", "overlap", "paused", "gone", "early"]

# How long before its time a firing's job is added (due at its time). Longer
# than an add's commit and the supervisor's read of it take under load; short
# enough that a pause or a removal a moment before a firing still stops it.
AHEAD_SECONDS = 0.5


class NewSchedule(Struct, kw_only=True):
    """A checked schedule, ready to be stored."""

    name: str
    expression: str  # as cron.parse_schedule normalized it ("@every 10s", "30 2 * * *")
    tz: str  # an IANA zone: the daemon's local one when none was given
    job: NewJob  # the job each firing adds (its run_at is ignored: due at the firing's time)
    no_overlap: bool
    catch_up: CatchUp


def new_schedule(
    name: str, expression: str, tz: str, job: NewJob, *, no_overlap: bool, catch_up: CatchUp, now: float
) -> NewSchedule:
    """ValueError, in the user's words, for a schedule that could never fire."""
    cron.check_zone(tz)
    if catch_up not in cron.CATCH_UP_CHOICES:
        raise ValueError(f"invalid catch-up {catch_up!r}: use none, one or all")
    parsed = cron.parse_schedule(expression, anchor=now)
    cron.next_firing(parsed, now, tz)  # one that never fires again is refused here
    if job.depends_on:
        raise ValueError("a schedule's jobs cannot wait for other jobs (--after)")
    if job.hold:
        raise ValueError("a schedule's jobs cannot be held: pause the schedule instead")
    if job.label is not None and job.label != name:
        raise ValueError(f"a schedule's jobs are labelled with its name ({name}); leave out the label")
    return NewSchedule(
        name=name, expression=parsed.expression, tz=tz, job=job, no_overlap=no_overlap, catch_up=catch_up
    )


def parse(expression: str, created_at: float) -> cron.Schedule:
    """A stored schedule's expression (stored only once it parsed)."""
    return cron.parse_schedule(expression, anchor=created_at)


def counted_from(since: float, last_firing: float | None) -> float:
    """Firings after this instant are still to come (or were missed)."""
    return since if last_firing is None else max(since, last_firing)


def upcoming(
    schedule: cron.Schedule, tz: str, since: float, last_firing: float | None, now: float
) -> float | None:
    """The next firing after `now` of a schedule that is not paused (None:
    none before the year 10000)."""
    try:
        return cron.next_firing(schedule, max(now, counted_from(since, last_firing)), tz)
    except ValueError:
        return None


def at_start(
    schedule: cron.Schedule,
    tz: str,
    since: float,
    last_firing: float | None,
    catch_up: CatchUp,
    now: float,
) -> Missed:
    """What a starting daemon fires for one schedule: the catch-up of the
    firings missed while no daemon ran, and the next deadline."""
    return cron.firings_missed(schedule, counted_from(since, last_firing), now, tz, catch_up)


def when_due(schedule: cron.Schedule, tz: str, due: float, catch_up: CatchUp, now: float) -> Missed:
    """The daemon woke for the firing `due` at `now`: that firing, and those it
    overslept as catch-up chooses (the machine was suspended, the clock set
    forward), and the next deadline after `now`."""
    following = cron.next_firing(schedule, due, tz)
    if following > now:
        return Missed(run=(due,), dropped=False, upcoming=following)
    missed = cron.firings_missed(schedule, due, now, tz, catch_up)
    return Missed(run=(due, *missed.run), dropped=missed.dropped, upcoming=missed.upcoming)


def job_due(firing: float | None, now: float) -> float:
    """When the job of `firing` is due: at the firing's time, or at once for
    one whose time has passed (a catch-up) and for `schedule run` (None)."""
    return now if firing is None else max(firing, now)


def skips_for_overlap(no_overlap: bool, last_job_state: JobState | None) -> bool:
    """Whether a firing adds no job: with --no-overlap, while the schedule's
    latest job is unfinished (a job removed meanwhile is finished)."""
    return no_overlap and last_job_state is not None and last_job_state in lifecycle.UNFINISHED_STATES
