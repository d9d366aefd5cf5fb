"""The supervisor's side of the store: claiming due jobs, the next timer,
recording how attempts ended, and finding the attempts a dead daemon left.

A mixin of `Store` (which provides `conn`, `_set_state` and the caches): kept
apart so that each module stays readable; it has no state of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from . import lifecycle
from .lifecycle import Event, Exit
from .protocol import JobState


class Claimed(msgspec.Struct, kw_only=True):
    """A job taken for an attempt: what the supervisor needs to run it."""

    id: int
    run: int  # run number across the job's life (names the attempt's logs)
    attempts: int  # attempts in the current round, for the retry policy
    command: str
    queue: str
    cwd: str
    env: dict[str, str]
    timeout: float | None
    max_retries: int
    backoff_base: float


class AttemptRecords:
    conn: sqlite3.Connection

    def _set_state(self, job_id: int, old: str, event: Event, now: float, **columns: object) -> None:
        raise NotImplementedError  # provided by Store

    def _environment(self, env_id: int) -> dict[str, str]:
        raise NotImplementedError  # provided by Store

    def claim(
        self, *, now: float, slots: int, queue_room: dict[str, int], busy: Sequence[int] = ()
    ) -> list[Claimed]:
        """Take up to `slots` due jobs, best first, from queues with room left.
        `queue_room` maps every claimable queue to its free slots; `busy` jobs
        still have a process from an earlier attempt (a cancel in its grace
        period, then a retry) and wait for it to be gone."""
        claimed: list[Claimed] = []
        room = dict(queue_room)
        busy_marks = ",".join("?" * len(busy))
        while slots > len(claimed) and any(room.values()):
            open_queues = [q for q, n in room.items() if n > 0]
            marks = ",".join("?" * len(open_queues))
            rows = self.conn.execute(
                "SELECT id, state, attempts, command, queue, cwd, env_id, timeout, max_retries,"
                " backoff_base FROM jobs INDEXED BY jobs_ready"
                " WHERE state IN ('pending', 'failed') AND unmet = 0 AND run_at <= ?"
                f" AND queue IN ({marks}) AND id NOT IN ({busy_marks})"
                " ORDER BY priority, run_at, id LIMIT ?",
                (now, *open_queues, *busy, slots - len(claimed)),
            ).fetchall()
            if not rows:
                break
            filled = False
            for row in rows:
                queue = row[4]
                if room[queue] <= 0:
                    filled = True
                    continue
                room[queue] -= 1
                claimed.append(self._claim_one(row, now))
            if not filled:
                break
        return claimed

    def _claim_one(self, row: tuple, now: float) -> Claimed:
        job_id, state, attempts = row[0], row[1], row[2]
        run = self.conn.execute(
            "SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
        self._set_state(job_id, state, Event.CLAIM, now, attempts=attempts + 1)
        self.conn.execute(
            "INSERT INTO attempts (job_id, attempt, started_at) VALUES (?, ?, ?)", (job_id, run, now)
        )
        env = self._environment(row[6])
        return Claimed(
            id=job_id,
            run=run,
            attempts=attempts + 1,
            command=row[3],
            queue=row[4],
            cwd=row[5],
            env=env,
            timeout=row[7],
            max_retries=row[8],
            backoff_base=row[9],
        )

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
    ) -> JobState:
        """Record the end of an attempt (with its pid and log paths, which the
        supervisor keeps in memory while it runs) and move the job on; returns
        its new state."""
        self.conn.execute(
            "UPDATE attempts SET ended_at = ?, exit_code = ?, signal = ?, error = ?,"
            " pid = coalesce(?, pid), stdout_path = coalesce(?, stdout_path),"
            " stderr_path = coalesce(?, stderr_path) WHERE job_id = ? AND attempt = ?",
            (now, exit.exit_code, exit.signal, exit.error, pid, stdout, stderr, claimed.id, claimed.run),
        )
        row = self.conn.execute(
            "SELECT state, attempts, (SELECT max(attempt) FROM attempts WHERE job_id = jobs.id)"
            " FROM jobs WHERE id = ?",
            (claimed.id,),
        ).fetchone()
        if row is None or row[0] != "running" or row[2] != claimed.run:
            # Canceled or removed while it ran, or an older attempt ending late:
            # only the attempt's own record changes.
            return row[0] if row else "canceled"
        outcome = lifecycle.after_attempt(
            succeeded=exit.succeeded,
            attempts=row[1],
            max_retries=claimed.max_retries,
            backoff_base=claimed.backoff_base,
            backoff_max=backoff_max,
            now=now,
        )
        extra: dict[str, object] = {"exit_code": exit.exit_code, "error": exit.error}
        if outcome.run_at is not None:
            extra["run_at"] = outcome.run_at
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
