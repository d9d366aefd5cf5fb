"""The job lifecycle: every rule about states, retries and readiness, and nothing else.

Theory of operation (after h11's _state.py): everything that decides a job's
state lives in this module, and this module knows nothing about who calls it.
It does no I/O and reads no clock: `now` is always passed in. The store and the
supervisor ask it what happens next and record the answer; they never set a
state of their own.

    pending ──claim──> running ──succeed──> completed
    failed  ──claim──┘    │
                          ├─ fail (retries left) ──> failed   (waits until run_at)
                          └─ exhaust (none left) ──> dead     (the dead-letter queue)
    pending / held / failed / running ──cancel──> canceled
    completed / dead / canceled ──retry──> pending   (attempts reset)
    pending / failed ──hold──> held ──release──> pending   (`add --hold` starts held)

A `failed` job is claimed directly once its run_at is reached; that is the same
as the "failed -> pending -> running" path without a write in between.
"""

from __future__ import annotations

import enum
import signal as signals
from collections.abc import Iterable, Mapping

from msgspec import Struct

from .durations import format_duration, format_duration_exact, format_size_exact, parse_duration, parse_size
from .protocol import MAX_CONCURRENCY, MAX_RETRIES, TERMINAL_STATES, JobChanges, JobSpec, JobState, readable


class Event(enum.Enum):
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    EXHAUST = "exhaust"
    CANCEL = "cancel"
    RETRY = "retry"
    HOLD = "hold"
    RELEASE = "release"
    UNCLAIM = "unclaim"  # its attempt could not start (no descriptor free): it waits again


TRANSITIONS: dict[tuple[JobState, Event], JobState] = {
    ("pending", Event.CLAIM): "running",
    ("failed", Event.CLAIM): "running",
    ("running", Event.SUCCEED): "completed",
    ("running", Event.FAIL): "failed",
    ("running", Event.EXHAUST): "dead",
    ("pending", Event.CANCEL): "canceled",
    ("failed", Event.CANCEL): "canceled",
    ("running", Event.CANCEL): "canceled",
    ("running", Event.UNCLAIM): "pending",
    ("completed", Event.RETRY): "pending",
    ("dead", Event.RETRY): "pending",
    ("canceled", Event.RETRY): "pending",
    ("pending", Event.HOLD): "held",
    ("failed", Event.HOLD): "held",
    ("held", Event.RELEASE): "pending",
    ("held", Event.CANCEL): "canceled",
}

WAITING_STATES: frozenset[str] = frozenset({"pending", "failed"})
"""States from which a job may be claimed once it is due and its dependencies completed."""
UNSTARTED_STATES: tuple[str, ...] = ("pending", "held")
"""States of a job that waits for its dependencies: when one completes, fails for
good or is retried, these dependents are recounted (or canceled)."""
EDITABLE_STATES: tuple[str, ...] = ("pending", "held", "failed")
"""States in which a job may be edited: it has no process, and is not finished."""
UNFINISHED_STATES: tuple[str, ...] = ("pending", "held", "running", "failed")


class InvalidTransition(ValueError):
    def __init__(self, state: str, event: Event) -> None:
        super().__init__(f"a {state} job cannot {event.value}")
        self.state = state
        self.event = event


def next_state(state: JobState, event: Event) -> JobState:
    """The state `event` leads to from `state`, or InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def can(state: JobState, event: Event) -> bool:
    return (state, event) in TRANSITIONS


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


# ----------------------------------------------------------------------------
# Settings the rules depend on


class Settings(Struct, kw_only=True):
    """Defaults for new jobs and limits for the supervisor; persisted with
    `config set`. Durations are seconds, sizes bytes."""

    max_retries: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 3600.0
    timeout: float | None = None
    concurrency: int = 1
    log_max_size: int = 10 * 1024 * 1024
    kill_grace: float = 10.0
    on_finish: str | None = None  # a shell command run when a job ends (see callbacks.py)


MAX_SECONDS = 10 * 365 * 86400  # the protocol's limit on every duration
MAX_LOG_SIZE = 1024**4


def _parse_whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"must be from {low:,} to {high:,}, got {value:,}")
    return value


def _parse_count(text: str) -> int:
    return _parse_whole(text, 0, MAX_RETRIES)


def _parse_slots(text: str) -> int:
    """Global slots: 0 stops claiming (running jobs go on), like pausing every queue."""
    return _parse_whole(text, 0, MAX_CONCURRENCY)


def _parse_base(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not 1 <= value <= 3600:  # also refuses nan
        raise ValueError(f"must be from 1 to 3600, got {text.strip()}")
    return value


def _parse_seconds(text: str) -> float:
    value = parse_duration(text)
    if value > MAX_SECONDS:
        raise ValueError(f"{text.strip()!r} is longer than the 10-year limit")
    return value


def _parse_optional_duration(text: str) -> float | None:
    """A duration, where none, off or zero mean "no limit"."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    return _parse_seconds(text) or None


def _parse_positive_duration(text: str) -> float:
    value = _parse_seconds(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, got {text.strip()!r}")
    return value


def _parse_optional_command(text: str) -> str | None:
    """A shell command, where none, off or nothing mean "no command"."""
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return None
    check_command(text)
    return text


def _parse_log_size(text: str) -> int:
    value = parse_size(text)
    if not 1024 <= value <= MAX_LOG_SIZE:
        raise ValueError(f"must be from 1k to 1T, got {text.strip()!r}")
    return value


# key as users write it -> (Settings field, parser of the user's text)
CONFIG_KEYS = {
    "max-retries": ("max_retries", _parse_count),
    "backoff-base": ("backoff_base", _parse_base),
    "backoff-max": ("backoff_max", _parse_positive_duration),
    "timeout": ("timeout", _parse_optional_duration),
    "concurrency": ("concurrency", _parse_slots),
    "log-max-size": ("log_max_size", _parse_log_size),
    "kill-grace": ("kill_grace", _parse_positive_duration),
    "on-finish": ("on_finish", _parse_optional_command),
}


def config_key(key: str) -> str:
    """The canonical spelling of a config key (dashes), or ValueError."""
    canonical = key.strip().lower().replace("_", "-")
    if canonical not in CONFIG_KEYS:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
    return canonical


def parse_config_value(key: str, text: str) -> tuple[str, int | float | str | None]:
    """(Settings field, value) for a user's `config set KEY VALUE`, or ValueError."""
    canonical = config_key(key)
    field, parse = CONFIG_KEYS[canonical]
    try:
        return field, parse(str(text))
    except ValueError as exc:
        raise ValueError(f"invalid value for {canonical}: {exc}") from None


def format_config_value(key: str, value: object) -> str:
    """A setting in the form `config set` takes and `config get` shows: 1h, 10M, none."""
    if value is None:
        return "none"
    if key in ("timeout", "backoff-max", "kill-grace"):
        return format_duration_exact(float(value))  # type: ignore[arg-type]
    if key == "log-max-size":
        return format_size_exact(int(value))  # type: ignore[call-overload]
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_with(settings: Settings, values: Mapping[str, object]) -> Settings:
    """A copy of `settings` with user-facing `values` (key -> text or number) applied."""
    fields = {}
    for key, raw in values.items():
        field, value = parse_config_value(key, str(raw))
        fields[field] = value
    return Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, **fields})


def settings_as_config(settings: Settings) -> dict[str, int | float | str | None]:
    return {key: getattr(settings, field) for key, (field, _) in CONFIG_KEYS.items()}


# ----------------------------------------------------------------------------
# New jobs


class NewJob(Struct, kw_only=True):
    """A validated job ready to be stored."""

    command: str
    queue: str
    priority: int
    max_retries: int
    backoff_base: float
    timeout: float | None
    run_at: float
    depends_on: list[int]
    label: str | None
    cwd: str
    env: Mapping[str, str]
    hold: bool = False


# Linux's MAX_ARG_STRLEN: one argument or one environment string (NAME=value)
# is at most 32 pages, counting its terminating NUL.
MAX_ARG_BYTES = 32 * 4096 - 1


def _arg_bytes(text: str) -> int:
    """Bytes `text` takes in an exec; only long texts are encoded to count them."""
    if len(text) * 4 <= MAX_ARG_BYTES:
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def check_environment(env: Mapping[str, str]) -> None:
    """ValueError naming the first variable execve would refuse."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"invalid environment variable name {key!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {readable(key)} contains a NUL byte")
        size = _arg_bytes(key) + 1 + _arg_bytes(value)
        if size > MAX_ARG_BYTES:
            raise ValueError(
                f"environment variable {readable(key)} is {size:,} bytes; Linux passes at most "
                f"{MAX_ARG_BYTES:,} bytes per variable (MAX_ARG_STRLEN)"
            )


def check_command(command: str) -> None:
    """ValueError if `command` could never run."""
    if not command.strip():
        raise ValueError("command is empty")
    if "\0" in command:
        raise ValueError("command contains a NUL byte")
    size = _arg_bytes(command)
    if size > MAX_ARG_BYTES:
        raise ValueError(
            f"command is {size:,} bytes; Linux runs at most {MAX_ARG_BYTES:,} bytes as one "
            "argument (MAX_ARG_STRLEN, 128 KiB): put it in a script and add the script"
        )


def check_label(label: str | None) -> None:
    if label is not None and "\0" in label:
        raise ValueError("label contains a NUL byte")


def check_path(name: str, path: str) -> None:
    """ValueError unless `path` is an absolute path the kernel could accept."""
    if "\0" in path:
        raise ValueError(f"{name} contains a NUL byte")
    if not path.startswith("/"):
        raise ValueError(f"{name} must be an absolute path, got {readable(path)!r}")


def check_spec(spec: JobSpec) -> None:
    """ValueError, in the user's words, for a job that could never run as
    given. Only what needs no daemon state: the client runs it too, so that a
    user's mistake is a usage error before anything is sent."""
    check_command(spec.command)
    check_label(spec.label)
    if spec.delay is not None and spec.run_at is not None:
        raise ValueError("give either a delay or a run_at time, not both")
    if spec.cwd is not None:
        check_path("cwd", spec.cwd)
    check_environment(spec.env)


def new_job(spec: JobSpec, *, cwd: str, env: Mapping[str, str], settings: Settings, now: float) -> NewJob:
    """Fill `spec`'s gaps from the request and the settings; ValueError names what
    is wrong. The request's `env` is the caller's to check, once per request."""
    check_spec(spec)
    job_cwd = cwd if spec.cwd is None else spec.cwd
    if spec.cwd is None:
        check_path("the working directory", cwd)
    # Shared, not copied, when the job adds nothing: a bulk add of 100,000 jobs
    # then stores (and hashes) one environment, not 100,000 equal ones.
    merged_env = {**env, **spec.env} if spec.env else env
    run_at = now
    if spec.delay is not None:
        run_at = now + spec.delay
    elif spec.run_at is not None:
        run_at = max(spec.run_at, now)
    return NewJob(
        command=spec.command,
        queue=spec.queue,
        priority=spec.priority,
        max_retries=settings.max_retries if spec.max_retries is None else spec.max_retries,
        backoff_base=settings.backoff_base if spec.backoff_base is None else spec.backoff_base,
        timeout=settings.timeout if spec.timeout is None else spec.timeout,
        run_at=run_at,
        depends_on=sorted(set(spec.after)),
        label=spec.label,
        cwd=job_cwd,
        env=merged_env,
        hold=spec.hold,
    )


def initial_state(job: NewJob) -> JobState:
    """A new job waits to be claimed, or is held until released."""
    return next_state("pending", Event.HOLD) if job.hold else "pending"


def job_changes(changes: JobChanges, *, now: float) -> dict[str, object]:
    """The job fields (store columns) that `changes` sets, validated; ValueError names what is wrong."""
    fields: dict[str, object] = {}
    if changes.command is not None:
        check_command(changes.command)
        fields["command"] = changes.command
    if changes.delay is not None and changes.run_at is not None:
        raise ValueError("give either a delay or a run_at time, not both")
    if changes.timeout is not None and changes.no_timeout:
        raise ValueError("give either a timeout or no timeout, not both")
    for name in ("queue", "priority", "max_retries", "backoff_base", "timeout"):
        value = getattr(changes, name)
        if value is not None:
            fields[name] = value
    if changes.no_timeout:
        fields["timeout"] = None
    if changes.label is not None:
        check_label(changes.label)
        fields["label"] = changes.label or None
    if changes.delay is not None:
        fields["run_at"] = now + changes.delay
    elif changes.run_at is not None:
        fields["run_at"] = max(changes.run_at, now)
    return fields


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
) -> Outcome:
    """The job's fate once attempt number `attempts` (1-based) ended. A failure
    that is not `retryable` uses up the retries at once."""
    if succeeded:
        return Outcome(Event.SUCCEED, "completed", None)
    if retryable and attempts <= max_retries:
        delay = backoff_delay(attempts, backoff_base, backoff_max)
        return Outcome(Event.FAIL, "failed", now + delay)
    return Outcome(Event.EXHAUST, "dead", None)


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


INTERRUPTED = Exit(False, None, None, "interrupted: the daemon stopped while the job ran")


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
        if state in ("dead", "canceled"):
            return DependencyVerdict(False, dep_id, state)
    return DependencyVerdict(all(s == "completed" for s in states.values()))


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
