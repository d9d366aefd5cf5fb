"""The job lifecycle: every rule that decides a job's state, and nothing else.

Theory of operation (after h11's _state.py): the state names, the events
that move a job between them (`TRANSITIONS`), the named sets of states that
every other module, SQL included, is built from, and what a state change does
to the jobs that wait for this one (`CASCADES`, state-triggered, as h11 keeps
its STATE_TRIGGERED_TRANSITIONS beside the event table) all live here. It
does no I/O and reads no clock: `now` is always passed in. The store and the
supervisor ask it what happens next and record the answer; they never decide
a state of their own.

    (new) ──add──> pending          (new) ──add held──> held
    pending ──claim──> running ──succeed──> completed
    failed  ──claim──┘    │
                          ├─ fail (retries left) ──> failed   (waits until run_at)
                          └─ exhaust (none left) ──> dead     (the dead-letter queue)
    pending / held / failed / running ──cancel──> canceled
    completed / dead / canceled ──retry──> pending   (attempts reset)
    pending / failed ──hold──> held ──release──> pending
    running ──unclaim──> pending     (its attempt could not start)

    A dependency entering dead or canceled cancels every dependent that has
    not started, and theirs in turn; entering or leaving completed makes them
    count their unmet dependencies again.

A `failed` job is claimed directly once its run_at is reached; that is the same
as the "failed -> pending -> running" path without a write in between.
"""

from __future__ import annotations

import enum
import signal as signals
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from msgspec import Struct

from queued.durations import format_duration

JobState = Literal["pending", "held", "running", "completed", "failed", "dead", "canceled"]
PENDING: Final = "pending"
HELD: Final = "held"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
DEAD: Final = "dead"
CANCELED: Final = "canceled"
STATES: tuple[JobState, ...] = (PENDING, HELD, RUNNING, COMPLETED, FAILED, DEAD, CANCELED)
TerminalState = Literal["completed", "dead", "canceled"]

NEW: Final = "new"  # before a job is stored: the state its ADD events leave
Origin = Literal["new"]


class Event(enum.Enum):
    ADD = "add"
    ADD_HELD = "add-held"  # `add --hold`
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    EXHAUST = "exhaust"
    CANCEL = "cancel"
    RETRY = "retry"
    HOLD = "hold"
    RELEASE = "release"
    UNCLAIM = "unclaim"  # its attempt could not start (no descriptor free): it waits again


TRANSITIONS: dict[tuple[JobState | Origin, Event], JobState] = {
    (NEW, Event.ADD): PENDING,
    (NEW, Event.ADD_HELD): HELD,
    (PENDING, Event.CLAIM): RUNNING,
    (FAILED, Event.CLAIM): RUNNING,
    (RUNNING, Event.SUCCEED): COMPLETED,
    (RUNNING, Event.FAIL): FAILED,
    (RUNNING, Event.EXHAUST): DEAD,
    (PENDING, Event.CANCEL): CANCELED,
    (FAILED, Event.CANCEL): CANCELED,
    (RUNNING, Event.CANCEL): CANCELED,
    (HELD, Event.CANCEL): CANCELED,
    (RUNNING, Event.UNCLAIM): PENDING,
    (COMPLETED, Event.RETRY): PENDING,
    (DEAD, Event.RETRY): PENDING,
    (CANCELED, Event.RETRY): PENDING,
    (PENDING, Event.HOLD): HELD,
    (FAILED, Event.HOLD): HELD,
    (HELD, Event.RELEASE): PENDING,
}


def states_that_can(event: Event) -> tuple[JobState, ...]:
    """The states `event` applies to, in STATES order."""
    return tuple(state for state in STATES if (state, event) in TRANSITIONS)


# The named sets. Tuples in STATES order, so that SQL built from them is stable.
TERMINAL_STATES: tuple[JobState, ...] = (COMPLETED, DEAD, CANCELED)
"""Finished: nothing happens to such a job unless a user retries it."""
UNFINISHED_STATES: tuple[JobState, ...] = tuple(s for s in STATES if s not in TERMINAL_STATES)
WAITING_STATES: tuple[JobState, ...] = states_that_can(Event.CLAIM)
"""Claimable once due and every dependency completed."""
UNSTARTED_STATES: tuple[JobState, ...] = (PENDING, HELD)
"""Where a job waits for its dependencies: what the dependents cascade touches."""
EDITABLE_STATES: tuple[JobState, ...] = tuple(s for s in UNFINISHED_STATES if s != RUNNING)
"""Unfinished with no process: may be edited, and still waits to run."""
ENDED_BADLY_STATES: tuple[JobState, ...] = (DEAD, CANCELED)
"""Finished without completing."""
UNIQUE_STATES: tuple[JobState, ...] = UNFINISHED_STATES
"""A job in these states holds its unique key: an add with the key returns it
(the stores enforce it with a partial unique index over these states)."""
UNIQUE_WINDOW_STATES: tuple[JobState, ...] = (COMPLETED,)
"""Finished jobs that hold their key within an add's `unique_for` window. Only
a completed job did the work the window protects; a dead or canceled one did
not, and a new add is the way to try again (as River's unique jobs do)."""

CANCELED_BY_USER = "canceled by user"


class InvalidTransition(ValueError):
    def __init__(self, state: str, event: Event) -> None:
        super().__init__(f"a {state} job cannot {event.value}")
        self.state = state
        self.event = event


def next_state(state: JobState | Origin, event: Event) -> JobState:
    """The state `event` leads to from `state`, or InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def can(state: JobState, event: Event) -> bool:
    return (state, event) in TRANSITIONS


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


def initial_state(*, hold: bool) -> JobState:
    """The state a new job is stored in."""
    return next_state(NEW, Event.ADD_HELD if hold else Event.ADD)


_DONE = {
    Event.CANCEL: "canceled",
    Event.RETRY: "retried",
    Event.HOLD: "held",
    Event.RELEASE: "released",
}


# The order a refusal lists states in: the waiting ones, the running, the finished.
_SPOKEN_ORDER: tuple[JobState, ...] = (PENDING, HELD, FAILED, RUNNING, COMPLETED, DEAD, CANCELED)


def refusal(job_id: int, state: str, event: Event) -> str:
    """Why `event` was refused for a job in `state`, naming the states it applies to."""
    allowed = sorted(states_that_can(event), key=_SPOKEN_ORDER.index)
    listed = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    return f"job {job_id} is {state}: only {listed} jobs can be {_DONE.get(event, event.value)}"


# ----------------------------------------------------------------------------
# What a state change does to the jobs that wait for this one


class Cascade(enum.Enum):
    CANCEL = "cancel"  # unstarted dependents are canceled, and theirs in turn
    RECOUNT = "recount"  # unstarted dependents count their unmet dependencies again


# State-triggered, beside the event table: entering (or leaving) a state.
_ON_ENTER: dict[JobState, Cascade] = {
    DEAD: Cascade.CANCEL,
    CANCELED: Cascade.CANCEL,
    COMPLETED: Cascade.RECOUNT,
}
_ON_LEAVE: dict[JobState, Cascade] = {COMPLETED: Cascade.RECOUNT}  # retried: its dependents wait again


def cascade(old: JobState | Origin, new: JobState) -> Cascade | None:
    """What moving a job from `old` to `new` does to its unstarted dependents."""
    if old == new:
        return None
    return _ON_ENTER.get(new) or _ON_LEAVE.get(old)  # type: ignore[arg-type]


CASCADES: dict[tuple[JobState | Origin, JobState], Cascade] = {
    (old, new): rule for (old, _), new in TRANSITIONS.items() if (rule := cascade(old, new)) is not None
}
"""Every transition of the table that touches dependents, and how."""

DEPENDENT_CANCEL_EVENT = Event.CANCEL  # what a cascade CANCEL applies to each dependent


# ----------------------------------------------------------------------------
# Unique keys


def unique_window_start(now: float, unique_for: float | None) -> float | None:
    """The earliest finish (a job's last change) that still holds its key for
    an add with `unique_for`; None: only unfinished jobs hold it. A job that
    ended exactly `unique_for` ago no longer does ("less than the window ago")."""
    if not unique_for:
        return None
    return now - unique_for


def holds_key(state: JobState, updated_at: float, window_start: float | None) -> bool:
    """Whether a job with a key (in `state`, last changed at `updated_at`) is
    the one an add of that key returns, given the add's window."""
    if state in UNIQUE_STATES:
        return True
    return window_start is not None and state in UNIQUE_WINDOW_STATES and updated_at > window_start


def unique_refusal(job_id: int, doing: str, key: str, holder: int, holder_state: str) -> str:
    """Why `doing` (retry, restart) job `job_id` was refused: its key is held."""
    if holder == job_id:  # a restart of the unfinished job itself
        return (
            f"cannot {doing} job {job_id}: it holds its unique key {key!r} while {holder_state};"
            " wait for it or cancel it"
        )
    return (
        f"cannot {doing} job {job_id}: its unique key {key!r} is held by job {holder} ({holder_state});"
        f" wait for that one or cancel it"
    )


# ----------------------------------------------------------------------------
# Retries


def backoff_delay(retry: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `retry` (1, 2, ...): base ** retry, capped."""
    if retry < 1:
        return 0.0
    try:
        return min(base**retry, cap)
    except OverflowError:
        return cap


class Outcome(Struct, frozen=True):
    """What becomes of a job after an attempt ended."""

    event: Event
    state: JobState
    run_at: float | None  # when the next attempt is due, for FAIL


def after_attempt(
    *,
    succeeded: bool,
    attempts: int,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    now: float,
    retryable: bool = True,
    at_once: bool = False,
) -> Outcome:
    """The job's fate once attempt number `attempts` (1-based) ended. A failure
    that is not `retryable` uses up the retries at once; one that was not the
    job's own (`at_once`: its node was lost) is retried without a backoff."""
    if succeeded:
        return Outcome(Event.SUCCEED, COMPLETED, None)
    if retryable and attempts <= max_retries:
        delay = 0.0 if at_once else backoff_delay(attempts, backoff_base, backoff_max)
        return Outcome(Event.FAIL, FAILED, now + delay)
    return Outcome(Event.EXHAUST, DEAD, None)


def attempt_counts(*, job_state: JobState | None, latest_run: int | None, run: int) -> bool:
    """Whether the end of attempt `run` decides its job's fate. It does not
    when the job moved on without it, canceled or removed while it ran, or
    retried and started again (an older attempt ending late): then only the
    attempt's own record changes."""
    return job_state == RUNNING and latest_run == run


def after_unclaim(job_state: JobState | None) -> Event | None:
    """A claim undone (its attempt never started): the job waits again, unless
    it was canceled or removed meanwhile."""
    return Event.UNCLAIM if job_state is not None and can(job_state, Event.UNCLAIM) else None


class Exit(Struct, frozen=True):
    """How an attempt's process ended, in the words the user sees."""

    succeeded: bool
    exit_code: int | None
    signal: int | None
    error: str | None
    retryable: bool = True  # False: another attempt would fail the same way


def signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_exit(returncode: int, *, timed_out_after: float | None = None) -> Exit:
    """An Exit from a Popen-style return code (negative = killed by a signal)."""
    if timed_out_after is not None:
        sig = -returncode if returncode < 0 else None
        return Exit(
            False, None if sig else returncode, sig, f"timed out after {format_duration(timed_out_after)}"
        )
    if returncode == 0:
        return Exit(True, 0, None, None)
    if returncode < 0:
        return Exit(False, None, -returncode, f"killed by {signal_name(-returncode)}")
    return Exit(False, returncode, None, f"exited with status {returncode}")


def spawn_failure(reason: str, *, lasting: bool = False) -> Exit:
    """A process that could not be started; `lasting` when nothing but a change
    to the job itself could make it start (an argument list too long for the
    kernel, say): then it is not retried."""
    return Exit(False, None, None, f"could not start: {reason}", retryable=not lasting)


def internal_failure(reason: str) -> Exit:
    """An attempt that queued itself failed to carry through (a fault around it)."""
    return Exit(False, None, None, f"internal error: {reason}")


def canceled_exit(returncode: int) -> Exit:
    """How an attempt stopped by a cancel ended (its job is canceled already)."""
    return Exit(False, None, -returncode if returncode < 0 else None, CANCELED_BY_USER)


INTERRUPTED = Exit(False, None, None, "interrupted: the daemon stopped while the job ran")
"""What an attempt gets that a daemon left running when it died (see recovery)."""


def node_lost(node: str | None) -> Exit:
    """What an attempt gets whose node's lease ran out while it ran (rescued by
    another node): interrupted, as INTERRUPTED, and retried alike."""
    if node is None:
        return INTERRUPTED
    return Exit(
        False, None, None, f"interrupted: its node {node} stopped renewing its lease while the job ran"
    )


# ----------------------------------------------------------------------------
# Dependencies


class DependencyVerdict(Struct, frozen=True):
    ready: bool  # every dependency completed
    blocker: int | None = None  # a dependency that can never complete
    blocker_state: str | None = None


def dependency_verdict(states: Mapping[int, str]) -> DependencyVerdict:
    """Whether a job whose dependencies are in `states` can run, must wait, or never will."""
    for dep_id in sorted(states):
        state = states[dep_id]
        if state in ENDED_BADLY_STATES:
            return DependencyVerdict(False, dep_id, state)
    return DependencyVerdict(all(s == COMPLETED for s in states.values()))


def unmet_count(states: Mapping[int, str]) -> int:
    """How many of a job's dependencies (their states) have not completed."""
    return sum(1 for state in states.values() if state != COMPLETED)


def dependency_cancel_reason(dep_id: int, dep_state: str) -> str:
    return f"canceled: dependency {dep_id} is {dep_state}"


def dependency_refusal(dep_id: int, dep_state: str) -> str:
    """Why a new job cannot wait for `dep_id`: it would be canceled the moment it was made."""
    return (
        f"--after {dep_id}: job {dep_id} is {dep_state}, so this job could never run "
        f"(`queuectl retry {dep_id}` first, or leave --after {dep_id} out)"
    )


def unknown_ids(wanted: Iterable[int], found: Iterable[int]) -> list[int]:
    return sorted(set(wanted) - set(found))
