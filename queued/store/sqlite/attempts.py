"""The supervisor's side of the store: reading due jobs ahead and recording
their starts, claiming due jobs outright, the next timer, recording how
attempts ended, and finding the attempts a dead daemon left.

A mixin of `Store` (which provides `conn`, `_set_state` and the caches): kept
apart so that each module stays readable; it has no state of its own. Here too,
as both halves of the store use them: `Refused`, and the `effect` marks by
which Store methods tell the writer what they can do to the claimable jobs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from queued import lifecycle
from queued.lifecycle import Event, Exit, JobState
from queued.protocol import ErrorCode

F = TypeVar("F", bound=Callable[..., Any])


class Claimed(msgspec.Struct, kw_only=True):
    """A job taken for an attempt: what the supervisor needs to run it."""

    id: int
    run: int  # run number across the job's life (names the attempt's logs)
    attempts: int  # attempts in the current round, for the retry policy
    command: str
    queue: str
    cwd: str | bytes  # bytes: a path that is not UTF-8, as stored
    env: dict[str, str]
    timeout: float | None
    max_retries: int
    backoff_base: float
    has_dependents: bool = False  # its success may release jobs waiting for it
    priority: int = 0
    run_at: float = 0.0

    @property
    def claim_key(self) -> tuple[int, float, int]:
        """Jobs due together are claimed in this order."""
        return (self.priority, self.run_at, self.id)


class Refused(Exception):
    """A request the store will not carry out; nothing it did is kept."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


# What `Database` learns from a Store method's `effect` mark (see `effect`).
READ = "read"  # changes nothing
ADDS = "adds"  # may make jobs claimable; never makes a claimable job unclaimable
SUPERVISOR = "supervisor"  # the supervisor's own records, whose effects it tracks itself
# Unmarked methods may make a claimable job unclaimable (cancel, remove, pause).
# READ and SUPERVISOR methods run without a savepoint of their own, so they
# must refuse before they write; an error after a write fails the whole batch.


def effect(kind: str) -> Callable[[F], F]:
    """Mark a Store method with what it can do to the set of claimable jobs."""

    def mark(fn: F) -> F:
        fn.effect = kind  # type: ignore[attr-defined]
        return fn

    return mark


class Ahead(msgspec.Struct):
    """Waiting jobs read without taking them (see `lookahead`)."""

    jobs: list[Claimed]  # due now, in claim order
    complete: bool  # every job due now in the queues asked about is in `jobs`
    upcoming: list[Claimed]  # due later, by run_at: every one due before `until`
    until: float | None  # the earliest run_at not read (None: no other waiting job)


_WAITING = (
    "SELECT id, attempts, command, queue, cwd, env_id, timeout, max_retries, backoff_base,"
    " (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE job_id = jobs.id),"
    " EXISTS (SELECT 1 FROM dependencies WHERE depends_on = jobs.id), priority, run_at"
    " FROM jobs INDEXED BY {index} WHERE state IN ('pending', 'failed') AND unmet = 0 AND {window}"
    " AND queue IN ({queues}) AND id NOT IN ({busy}) ORDER BY {order} LIMIT ?"
)
_DUE = {"index": "jobs_ready", "window": "run_at <= ?", "order": "priority, run_at, id"}
_UPCOMING = {"index": "jobs_due", "window": "run_at > ? AND run_at <= ?", "order": "run_at, id"}


# What a claim makes of a waiting job (either waiting state): one UPDATE for both.
_CLAIMED = lifecycle.next_state("pending", Event.CLAIM)
assert lifecycle.next_state("failed", Event.CLAIM) == _CLAIMED


class AttemptRecords:
    conn: sqlite3.Connection
    # Set when a batch made a job claimable that may outrank those already read
    # ahead: a released dependent, a failed attempt's retry time.
    reordered: bool

    def _set_state(self, job_id: int, old: str, event: Event, now: float, **columns: object) -> None:
        raise NotImplementedError  # provided by Store

    def _environment(self, env_id: int) -> dict[str, str]:
        raise NotImplementedError  # provided by Store

    def _waiting(
        self,
        kind: dict[str, str],
        window: tuple[float, ...],
        queues: Sequence[str],
        busy: Sequence[int],
        limit: int,
    ) -> list[Claimed]:
        sql = _WAITING.format(**kind, queues=",".join("?" * len(queues)), busy=",".join("?" * len(busy)))
        return [
            Claimed(
                id=row[0],
                run=row[9],
                attempts=row[1] + 1,
                command=row[2],
                queue=row[3],
                cwd=row[4],
                env=self._environment(row[5]),
                timeout=row[6],
                max_retries=row[7],
                backoff_base=row[8],
                has_dependents=bool(row[10]),
                priority=row[11],
                run_at=row[12],
            )
            for row in self.conn.execute(sql, (*window, *queues, *busy, limit)).fetchall()
        ]

    def _due(self, now: float, queues: Sequence[str], busy: Sequence[int], limit: int) -> list[Claimed]:
        return self._waiting(_DUE, (now,), queues, busy, limit)

    @effect(READ)
    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        """Waiting jobs of `queues`, without taking them: the first `limit` due
        now in claim order, and up to `limit` more due by `horizon`. The
        supervisor starts them one by one from memory (recording each start
        with `start`) for as long as nothing could have changed them."""
        if not queues:
            return Ahead([], complete=True, upcoming=[], until=None)
        jobs = self._due(now, queues, busy, limit)
        upcoming = self._waiting(_UPCOMING, (now, horizon), queues, busy, limit + 1)
        if len(upcoming) > limit:
            # Cut at the first one left out, with any due at the same instant.
            until: float | None = upcoming[limit].run_at
            upcoming = [job for job in upcoming if job.run_at < upcoming[limit].run_at]
        else:
            until = self.next_due(horizon, queues)
        return Ahead(jobs, complete=len(jobs) < limit, upcoming=upcoming, until=until)

    @effect(SUPERVISOR)
    def start(self, job: Claimed, now: float) -> None:
        """Record that `job`, read by `lookahead`, started its attempt. Refused if
        it is no longer what was read (then nothing here changed)."""
        changed = self.conn.execute(
            "UPDATE jobs SET state = ?, attempts = ?, updated_at = ? WHERE id = ?"
            " AND state IN ('pending', 'failed') AND unmet = 0 AND attempts = ?"
            " AND NOT EXISTS (SELECT 1 FROM attempts WHERE job_id = ? AND attempt >= ?)",
            (_CLAIMED, job.attempts, now, job.id, job.attempts - 1, job.id, job.run),
        ).rowcount
        if not changed:
            raise Refused("invalid", f"job {job.id} changed before its attempt {job.run} was recorded")
        self.conn.execute(
            "INSERT INTO attempts (job_id, attempt, started_at) VALUES (?, ?, ?)", (job.id, job.run, now)
        )

    @effect(SUPERVISOR)
    def unclaim(self, job: Claimed, now: float) -> None:
        """Undo the committed claim of `job`, whose attempt could not start for
        want of descriptors: the attempt is forgotten and the job waits again
        (unless it was canceled meanwhile)."""
        self.conn.execute(
            "DELETE FROM attempts WHERE job_id = ? AND attempt = ? AND ended_at IS NULL", (job.id, job.run)
        )
        row = self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if row is not None and row[0] == "running":
            self._set_state(job.id, "running", Event.UNCLAIM, now, attempts=job.attempts - 1)

    @effect(SUPERVISOR)
    def claim(
        self, *, now: float, slots: int, queue_room: dict[str, int], busy: Sequence[int] = ()
    ) -> list[Claimed]:
        """Take up to `slots` due jobs, best first, from queues with room left.
        `queue_room` maps every claimable queue to its free slots; `busy` jobs
        still have a process from an earlier attempt (a cancel in its grace
        period, then a retry) and wait for it to be gone."""
        claimed: list[Claimed] = []
        room = dict(queue_room)
        while slots > len(claimed) and any(room.values()):
            open_queues = [q for q, n in room.items() if n > 0]
            taken = [c.id for c in claimed]
            jobs = self._due(now, open_queues, [*busy, *taken], slots - len(claimed))
            if not jobs:
                break
            filled = False
            for job in jobs:
                if room[job.queue] <= 0:
                    filled = True
                    continue
                room[job.queue] -= 1
                self.start(job, now)
                claimed.append(job)
            if not filled:
                break
        return claimed

    @effect(READ)
    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        """The earliest future run_at among waiting jobs of `queues`."""
        if not queues:
            return None
        marks = ",".join("?" * len(queues))
        row = self.conn.execute(
            "SELECT run_at FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')"
            f" AND unmet = 0 AND run_at > ? AND queue IN ({marks}) ORDER BY run_at LIMIT 1",
            (now, *queues),
        ).fetchone()
        return row[0] if row else None

    @effect(SUPERVISOR)
    def finish(
        self,
        claimed: Claimed,
        exit: Exit,
        backoff_max: float,
        now: float,
        *,
        pid: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
        log_incomplete: str | None = None,
    ) -> JobState | None:
        """Record the end of an attempt (with its pid and log paths, which the
        supervisor keeps in memory while it runs, and what its logs miss) and
        move the job on; returns its new state, or None if the job was removed
        while it ran (then its log files are the caller's to delete: no row
        names them)."""
        self.conn.execute(
            "UPDATE attempts SET ended_at = ?, exit_code = ?, signal = ?, error = ?,"
            " pid = coalesce(?, pid), stdout_path = coalesce(?, stdout_path),"
            " stderr_path = coalesce(?, stderr_path), log_incomplete = ? WHERE job_id = ? AND attempt = ?",
            (
                now,
                exit.exit_code,
                exit.signal,
                exit.error,
                pid,
                stdout,
                stderr,
                log_incomplete,
                claimed.id,
                claimed.run,
            ),
        )
        row = self.conn.execute(
            "SELECT state, attempts, (SELECT max(attempt) FROM attempts WHERE job_id = jobs.id)"
            " FROM jobs WHERE id = ?",
            (claimed.id,),
        ).fetchone()
        if row is None or row[0] != "running" or row[2] != claimed.run:
            # Canceled or removed while it ran, or an older attempt ending late:
            # only the attempt's own record changes.
            return row[0] if row else None
        outcome = lifecycle.after_attempt(
            succeeded=exit.succeeded,
            attempts=row[1],
            max_retries=claimed.max_retries,
            backoff_base=claimed.backoff_base,
            backoff_max=backoff_max,
            now=now,
            retryable=exit.retryable,
        )
        extra: dict[str, object] = {"exit_code": exit.exit_code, "error": exit.error}
        if outcome.run_at is not None:
            extra["run_at"] = outcome.run_at
            self.reordered = True
        self._set_state(claimed.id, "running", outcome.event, now, **extra)
        return outcome.state

    def interrupted(self) -> list[Claimed]:
        """Jobs left `running` by a daemon that died, as Claimed records to finish."""
        out = []
        for row in self.conn.execute(
            "SELECT j.id, a.attempt, j.attempts, j.command, j.queue, j.cwd, j.timeout,"
            " j.max_retries, j.backoff_base FROM jobs j JOIN attempts a ON a.job_id = j.id"
            " WHERE j.state = 'running' AND a.attempt = (SELECT max(attempt) FROM attempts"
            " WHERE job_id = j.id)"
        ).fetchall():
            out.append(
                Claimed(
                    id=row[0],
                    run=row[1],
                    attempts=row[2],
                    command=row[3],
                    queue=row[4],
                    cwd=row[5],
                    env={},
                    timeout=row[6],
                    max_retries=row[7],
                    backoff_base=row[8],
                )
            )
        return out
