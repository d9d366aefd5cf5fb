"""What makes a job runnable as given: a request's job checked and completed
from the settings (`new_job`), and an edit's fields checked (`job_changes`).
ValueError, in the user's words, for anything that could never run. Pure:
`now` is passed in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from msgspec import Struct, field

from queued.protocol import MAX_CONCURRENCY, MAX_UNIQUE_KEY, JobChanges, JobSpec, is_utf8, readable
from queued.resources import MAX_UNITS


class JobDefaults(Protocol):
    """What a new job takes from the settings where its request is silent."""

    max_retries: int
    backoff_base: float
    timeout: float | None


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
    unique_key: str | None = None
    unique_for: float | None = None  # seconds: see lifecycle.unique_window_start
    node: str | None = None  # the only node that may run it (pinned), or any
    slots: int = 1  # how many of a node's slots it takes
    needs: dict[str, int] = field(default_factory=dict)  # counted resources ("gpu": 1)


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


def check_unique_key(key: str | None) -> None:
    """ValueError unless `key` is a name a user can read back on one line."""
    if key is None:
        return
    if not key.strip():
        raise ValueError("the unique key is empty")
    if len(key) > MAX_UNIQUE_KEY:
        raise ValueError(f"the unique key is {len(key):,} characters; at most {MAX_UNIQUE_KEY} are kept")
    if not is_utf8(key):
        raise ValueError(f"the unique key {readable(key)!r} holds bytes that are not UTF-8")
    if not key.isprintable():
        raise ValueError(f"the unique key {readable(key)!r} holds a control character: use printable text")


# A resource's name: the rule of resources.parse_needs (and of the node's
# --resources), for needs that come as a mapping (JSON lines, the SDK).
RESOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # whole: fullmatch


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_slots(slots: object) -> None:
    """ValueError unless `slots` is a job's share of a node's slots (as --slots)."""
    if not _whole(slots) or not 1 <= slots <= MAX_CONCURRENCY:  # type: ignore[operator]
        raise ValueError(f"invalid slots {slots!r}: a whole number from 1 to {MAX_CONCURRENCY:,}")


def check_needs(needs: Mapping[object, object]) -> None:
    """ValueError naming the first entry of a job's needs that is not NAME:
    COUNT as `--needs` takes them (resources.parse_needs checks the text)."""
    if not isinstance(needs, Mapping):
        raise ValueError('needs must map resource names to counts, e.g. {"gpu": 1}')
    for name, count in needs.items():
        if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
            raise ValueError(
                f"invalid resource name {readable(name) if isinstance(name, str) else name!r}: "
                "a letter, then letters, digits, '_', '.' or '-' (64 at most)"
            )
        if name == "slots":
            raise ValueError("'slots' is not a resource: a job's slots are an option of its own (--slots N)")
        if not _whole(count) or not 1 <= count <= MAX_UNITS:  # type: ignore[operator]
            raise ValueError(f"invalid count {count!r} for {name}: a whole number from 1 to {MAX_UNITS:,}")


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
    check_unique_key(spec.unique_key)
    if spec.unique_for is not None and spec.unique_key is None:
        raise ValueError("a unique-for window needs a unique key (--unique KEY)")
    if spec.delay is not None and spec.run_at is not None:
        raise ValueError("give either a delay or a run_at time, not both")
    if spec.cwd is not None:
        check_path("cwd", spec.cwd)
    if spec.env:
        check_environment(spec.env)
    if spec.slots != 1 or spec.slots.__class__ is not int:
        check_slots(spec.slots)
    if spec.needs:
        check_needs(spec.needs)


def new_job(spec: JobSpec, *, cwd: str, env: Mapping[str, str], settings: JobDefaults, now: float) -> NewJob:
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
        depends_on=sorted(set(spec.after)) if spec.after else [],
        label=spec.label,
        cwd=job_cwd,
        env=merged_env,
        hold=spec.hold,
        unique_key=spec.unique_key,
        unique_for=spec.unique_for,
        slots=spec.slots,
        needs=spec.needs,
    )


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
    if changes.slots is not None:
        check_slots(changes.slots)
        fields["slots"] = changes.slots
    if changes.needs is not None:
        check_needs(changes.needs)
        fields["needs"] = changes.needs
    if changes.label is not None:
        check_label(changes.label)
        fields["label"] = changes.label or None
    if changes.delay is not None:
        fields["run_at"] = now + changes.delay
    elif changes.run_at is not None:
        fields["run_at"] = max(changes.run_at, now)
    return fields
