"""Rows to Structs, in one place: the column lists each query selects and the
Struct each row becomes. A column added here is added everywhere."""

from __future__ import annotations

import msgspec

from queued import lifecycle
from queued.protocol import Job, Run, readable
from queued.store.contract import Claimed


def sql_states(states: tuple[str, ...]) -> str:
    """A set of lifecycle's states as an SQL list: `'pending', 'failed'`."""
    return ", ".join(f"'{state}'" for state in states)


WAITING = sql_states(lifecycle.WAITING_STATES)
UNSTARTED = sql_states(lifecycle.UNSTARTED_STATES)
UNFINISHED = sql_states(lifecycle.UNFINISHED_STATES)
TERMINAL = sql_states(lifecycle.TERMINAL_STATES)
UNIQUE = sql_states(lifecycle.UNIQUE_STATES)
UNIQUE_WINDOW = sql_states(lifecycle.UNIQUE_WINDOW_STATES)

JOB_COLUMNS = (
    "id, command, state, queue, priority, label, attempts, max_retries, backoff_base,"
    " timeout, exit_code, run_at, created_at, updated_at, cwd, error, unique_key, node, slots, needs"
)
INSERT_JOB = (
    "INSERT INTO jobs (command, state, queue, priority, label, max_retries, backoff_base,"
    " timeout, run_at, created_at, updated_at, cwd, env_id, unmet, error, unique_key, node, slots, needs)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)

# A job's needs and an attempt's GPUs are JSON, NULL when there are none (the
# common case costs no encoding nor decoding). SQLite gives the text back;
# PostgreSQL's driver gives jsonb back decoded.
_decode_needs = msgspec.json.Decoder(dict[str, int]).decode
_decode_gpus = msgspec.json.Decoder(list[int]).decode


def stored_json(value: dict[str, int] | list[int] | tuple[int, ...]) -> str | None:
    """A job's needs or an attempt's GPUs as their column holds them (None: none)."""
    return msgspec.json.encode(value).decode() if value else None


def needs(value: str | bytes | dict[str, int] | None) -> dict[str, int]:
    """A job's needs from its column."""
    if value is None:
        return {}
    return _decode_needs(value) if isinstance(value, (str, bytes)) else value


def gpus(value: str | bytes | list[int] | None) -> list[int]:
    """An attempt's GPU indices from its column."""
    if value is None:
        return []
    return _decode_gpus(value) if isinstance(value, (str, bytes)) else value


# The latest attempt of a job: (started_at, ended_at, node, gpus as stored).
Latest = tuple[float | None, float | None, str | None, object]
NO_ATTEMPT: Latest = (None, None, None, None)


def job(row: tuple, depends_on: list[int], unmet: list[int], latest: Latest) -> Job:
    """A Job from a row of JOB_COLUMNS, with what a reader asks next."""
    (job_id, command, state, queue, priority, label, attempts, max_retries, backoff_base) = row[:9]
    (timeout, exit_code, run_at, created_at, updated_at, cwd, error, unique_key, pinned) = row[9:18]
    slots, needed = row[18:20]
    return Job(
        id=job_id,
        command=command,
        state=state,
        queue=queue,
        priority=priority,
        label=label,
        attempts=attempts,
        max_retries=max_retries,
        backoff_base=backoff_base,
        timeout=timeout,
        exit_code=exit_code,
        run_at=run_at,
        created_at=created_at,
        updated_at=updated_at,
        cwd=cwd if isinstance(cwd, str) else readable(cwd),
        error=error,
        depends_on=depends_on,
        # Only a job that has not started waits for its dependencies: a failed
        # one ran once they completed, and a dependency retried since does not hold it back.
        waiting_on=unmet if state in lifecycle.UNSTARTED_STATES else [],
        started_at=latest[0],
        ended_at=latest[1],
        unique_key=unique_key,
        node=latest[2],
        pinned=pinned,
        slots=slots,
        needs=needs(needed),
        # What it holds while it runs (and held last, for `show --json`).
        gpus=gpus(latest[3]),
    )


# The pid of an attempt claimed but not started yet (`Store.claim(started=False)`,
# until `Store.mark_started`): no process has it.
NOT_STARTED = 0

RUN_COLUMNS = (
    "attempt, pid, started_at, ended_at, exit_code, signal, error, stdout_path, stderr_path, log_incomplete,"
    " node, gpus"
)


def run(row: tuple) -> Run:
    """A Run from a row of RUN_COLUMNS."""
    (
        attempt,
        pid,
        started_at,
        ended_at,
        exit_code,
        signal,
        error,
        stdout_path,
        stderr_path,
        incomplete,
        node,
        held,
    ) = row
    return Run(
        attempt=attempt,
        pid=pid or None,  # NOT_STARTED: no process yet
        started_at=started_at,
        ended_at=ended_at,
        exit_code=exit_code,
        signal=signal,
        error=error,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        log_incomplete=incomplete,
        node=node,
        gpus=gpus(held),
    )


# A waiting job as the supervisor reads it: its env is the environments
# table's row (env_id), looked up by the caller's cache.
WAITING_COLUMNS = (
    "id, attempts, command, queue, cwd, env_id, timeout, max_retries, backoff_base,"
    " (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE job_id = jobs.id),"
    " EXISTS (SELECT 1 FROM dependencies WHERE depends_on = jobs.id), priority, run_at, slots, needs"
)


def waiting(row: tuple, env: dict[str, str]) -> Claimed:
    """A Claimed from a row of WAITING_COLUMNS (`env` is its env_id's environment)."""
    job_id, attempts, command, queue, cwd, _, timeout, max_retries, backoff_base = row[:9]
    next_run, has_dependents, priority, run_at, slots, needed = row[9:15]
    return Claimed(
        id=job_id,
        run=next_run,
        attempts=attempts + 1,
        command=command,
        queue=queue,
        cwd=cwd,
        env=env,
        timeout=timeout,
        max_retries=max_retries,
        backoff_base=backoff_base,
        has_dependents=bool(has_dependents),
        priority=priority,
        run_at=run_at,
        slots=slots,
        needs=needs(needed),
    )


# An attempt a dead daemon left running, with its job.
INTERRUPTED_COLUMNS = (
    "j.id, a.attempt, j.attempts, j.command, j.queue, j.cwd, j.timeout, j.max_retries, j.backoff_base,"
    " j.slots, j.needs"
)


def interrupted(row: tuple) -> Claimed:
    """A Claimed from a row of INTERRUPTED_COLUMNS, to be finished as interrupted."""
    job_id, run_number, attempts, command, queue, cwd, timeout, max_retries, backoff_base, slots, needed = row
    return Claimed(
        id=job_id,
        run=run_number,
        attempts=attempts,
        command=command,
        queue=queue,
        cwd=cwd,
        env={},
        timeout=timeout,
        max_retries=max_retries,
        backoff_base=backoff_base,
        slots=slots,
        needs=needs(needed),
    )
