"""The supervisor's side of the store: reading due jobs ahead and recording
their starts, claiming due jobs outright, the next timer, recording how
attempts ended, and finding the attempts a dead daemon left."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from queued import lifecycle
from queued.lifecycle import Event, Exit, JobState
from queued.resources import Fit
from queued.store.contract import (
    NOTHING,
    Ahead,
    AttemptEnd,
    Changes,
    Claimed,
    NodeIdentity,
    Recovered,
    Refused,
    Written,
)
from queued.store.environments import Environments
from queued.store.sqlite import rows
from queued.store.sqlite.rows import NOT_STARTED, WAITING
from queued.store.transitions import Transitions

_SELECT_WAITING = (
    f"SELECT {rows.WAITING_COLUMNS}"
    f" FROM jobs INDEXED BY {{index}} WHERE state IN ({WAITING}) AND unmet = 0 AND {{window}}"
    " AND queue IN ({queues}) AND id NOT IN ({busy}) AND (node IS NULL OR node = ?)"
    " ORDER BY {order} LIMIT ?"
)
_DUE = {"index": "jobs_ready", "window": "run_at <= ?", "order": "priority, run_at, id"}
_UPCOMING = {"index": "jobs_due", "window": "run_at > ? AND run_at <= ?", "order": "run_at, id"}

# A claim with a fit reads past at most this many jobs that do not fit now.
PASSED_OVER = 64

# What a claim makes of a waiting job (either waiting state): one UPDATE for all.
_CLAIMED = lifecycle.next_state(lifecycle.WAITING_STATES[0], Event.CLAIM)
assert all(lifecycle.next_state(state, Event.CLAIM) == _CLAIMED for state in lifecycle.WAITING_STATES)


class Attempts:
    def __init__(
        self,
        conn: sqlite3.Connection,
        environments: Environments,
        transitions: Transitions,
        node: NodeIdentity,
    ) -> None:
        self.conn = conn
        self.environments = environments
        self.transitions = transitions
        self.node = node  # named on every attempt; jobs pinned elsewhere are not this one's

    def _waiting(
        self,
        kind: dict[str, str],
        window: tuple[float, ...],
        queues: Sequence[str],
        busy: Sequence[int],
        limit: int,
    ) -> list[Claimed]:
        sql = _SELECT_WAITING.format(
            **kind, queues=",".join("?" * len(queues)), busy=",".join("?" * len(busy))
        )
        environment = self.environments.get
        return [
            rows.waiting(row, environment(row[5]))
            for row in self.conn.execute(sql, (*window, *queues, *busy, self.node.name, limit)).fetchall()
        ]

    def lookahead(
        self, *, now: float, horizon: float, queues: Sequence[str], busy: Sequence[int], limit: int
    ) -> Ahead:
        """Waiting jobs of `queues`, without taking them: the first `limit` due
        now in claim order, and up to `limit` more due by `horizon`. The
        supervisor starts them one by one from memory (recording each start
        with `start`) for as long as nothing could have changed them."""
        if not queues:
            return Ahead([], complete=True, upcoming=[], until=None)
        jobs = self._waiting(_DUE, (now,), queues, busy, limit)
        upcoming = self._waiting(_UPCOMING, (now, horizon), queues, busy, limit + 1)
        if len(upcoming) > limit:
            # Cut at the first one left out, with any due at the same instant.
            until: float | None = upcoming[limit].run_at
            upcoming = [job for job in upcoming if job.run_at < upcoming[limit].run_at]
        else:
            until = self.next_due(horizon, queues)
        return Ahead(jobs, complete=len(jobs) < limit, upcoming=upcoming, until=until)

    def next_due(self, now: float, queues: Sequence[str]) -> float | None:
        """The earliest future run_at among waiting jobs of `queues`."""
        if not queues:
            return None
        marks = ",".join("?" * len(queues))
        row = self.conn.execute(
            f"SELECT run_at FROM jobs INDEXED BY jobs_due WHERE state IN ({WAITING})"
            f" AND unmet = 0 AND run_at > ? AND queue IN ({marks}) AND (node IS NULL OR node = ?)"
            " ORDER BY run_at LIMIT 1",
            (now, *queues, self.node.name),
        ).fetchone()
        return row[0] if row else None

    def start(self, job: Claimed, now: float, gpus: Sequence[int] = ()) -> Written[None]:
        """Record that `job`, read by `lookahead`, started its attempt (holding
        `gpus`). Refused if it is no longer what was read (then nothing here changed)."""
        changed = self.conn.execute(
            "UPDATE jobs SET state = ?, attempts = ?, updated_at = ? WHERE id = ?"
            f" AND state IN ({WAITING}) AND unmet = 0 AND attempts = ?"
            " AND NOT EXISTS (SELECT 1 FROM attempts WHERE job_id = ? AND attempt >= ?)",
            (_CLAIMED, job.attempts, now, job.id, job.attempts - 1, job.id, job.run),
        ).rowcount
        if not changed:
            raise Refused("invalid", f"job {job.id} changed before its attempt {job.run} was recorded")
        self.conn.execute(
            "INSERT INTO attempts (job_id, attempt, started_at, node, gpus) VALUES (?, ?, ?, ?, ?)",
            (job.id, job.run, now, self.node.name, rows.stored_json(tuple(gpus)) if gpus else None),
        )
        return Written(None)

    def claim(
        self,
        *,
        now: float,
        slots: int,
        queue_room: dict[str, int],
        busy: Sequence[int] = (),
        gpus: Mapping[int, Sequence[int]] | None = None,
        fit: Fit | None = None,
        started: bool = True,
    ) -> Written[list[Claimed]]:
        """Take up to `slots` due jobs, best first, from queues with room left.
        `queue_room` maps every claimable queue to its free slots; `busy` jobs
        still have a process from an earlier attempt (a cancel in its grace
        period, then a retry) and wait for it to be gone; `gpus`: the GPU
        indices the attempt of a job (by id) holds, should the claim take it.
        With `fit`, only the jobs its allocator starts, with the GPUs it gives
        them (at most PASSED_OVER jobs passed over). Unless `started`, the
        attempts are claimed, not started, until `mark_started` (pid
        NOT_STARTED meanwhile)."""
        claimed: list[Claimed] = []
        room = self._bounded(queue_room)
        allocator = fit.allocator(now) if fit is not None else None
        passed: list[int] = []  # jobs that do not fit now: not read again
        while slots > len(claimed) and any(room.values()) and len(passed) <= PASSED_OVER:
            open_queues = [q for q, n in room.items() if n > 0]
            skipped = [*busy, *(c.id for c in claimed), *passed]
            jobs = self._waiting(_DUE, (now,), open_queues, skipped, slots - len(claimed))
            if not jobs:
                break
            filled = False
            for job in jobs:
                if room[job.queue] <= 0:
                    filled = True
                    continue
                if allocator is not None:
                    if allocator.full:
                        return Written(self._not_started(claimed, started))
                    given = allocator.offer(job.slots, job.needs, job.run_at)
                    if given is None:
                        passed.append(job.id)
                        filled = True
                        continue
                    job.gpus = given
                elif gpus:
                    job.gpus = tuple(gpus.get(job.id, ()))
                room[job.queue] -= 1
                self.start(job, now, job.gpus)
                claimed.append(job)
            if not filled:
                break
        return Written(self._not_started(claimed, started))

    def _not_started(self, claimed: list[Claimed], started: bool) -> list[Claimed]:
        """`claimed`, their attempts marked not started unless `started`."""
        if not started:
            self.conn.executemany(
                f"UPDATE attempts SET pid = {NOT_STARTED} WHERE job_id = ? AND attempt = ?",
                [(job.id, job.run) for job in claimed],
            )
        return claimed

    def mark_started(self, attempts: Sequence[tuple[int, int, int | None, float]]) -> Written[list[int]]:
        """Record the process (pid, start time) of each (job id, run) claimed
        not started; the jobs of those that are no longer such (unclaimed,
        ended): their processes must stop."""
        gone = []
        for job_id, run, pid, started_at in attempts:
            if not self.conn.execute(
                "UPDATE attempts SET pid = ?, started_at = ? WHERE job_id = ? AND attempt = ?"
                f" AND pid = {NOT_STARTED} AND ended_at IS NULL"
                f" AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND state = '{lifecycle.RUNNING}')",
                (pid, started_at, job_id, run, job_id),
            ).rowcount:
                gone.append(job_id)
        return Written(gone)

    def _bounded(self, queue_room: dict[str, int]) -> dict[str, int]:
        """`queue_room`, each queue's room cut to its concurrency less its jobs
        running in the store (the supervisor counts only its own attempts)."""
        room = dict(queue_room)
        named = [queue for queue, n in room.items() if n > 0]
        if not named:
            return room
        marks = ",".join("?" * len(named))
        for queue, left in self.conn.execute(
            f"SELECT q.name, q.concurrency - coalesce(c.n, 0) FROM queues q LEFT JOIN counts c"
            f" ON c.queue = q.name AND c.state = '{lifecycle.RUNNING}'"
            f" WHERE q.concurrency IS NOT NULL AND q.name IN ({marks})",
            named,
        ):
            room[queue] = max(0, min(room[queue], left))
        return room

    def unclaim(self, job: Claimed, now: float) -> Written[None]:
        """Undo the committed claim of `job`, whose attempt could not start for
        want of descriptors: the attempt is forgotten and the job waits again
        (unless it was canceled meanwhile)."""
        self.conn.execute(
            "DELETE FROM attempts WHERE job_id = ? AND attempt = ? AND ended_at IS NULL", (job.id, job.run)
        )
        row = self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
        event = lifecycle.after_unclaim(row[0] if row else None)
        if event is None:
            return Written(None)
        changes = Changes()
        self.transitions.move(job.id, row[0], event, now, changes, attempts=job.attempts - 1)
        return Written(None, changes)

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
    ) -> Written[JobState | None]:
        """Record the end of an attempt (with its pid and log paths, which the
        supervisor keeps in memory while it runs, and what its logs miss) and
        move the job on as lifecycle says; its new state, or None if the job
        was removed while it ran (then its log files are the caller's to
        delete: no row names them)."""
        self.conn.execute(
            "UPDATE attempts SET ended_at = ?, exit_code = ?, signal = ?, error = ?,"
            f" pid = coalesce(?, nullif(pid, {NOT_STARTED})), stdout_path = coalesce(?, stdout_path),"
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
        state, attempts, latest_run = row if row else (None, None, None)
        if not lifecycle.attempt_counts(job_state=state, latest_run=latest_run, run=claimed.run):
            return Written(state, NOTHING)
        outcome = lifecycle.after_attempt(
            succeeded=exit.succeeded,
            attempts=attempts,
            max_retries=claimed.max_retries,
            backoff_base=claimed.backoff_base,
            backoff_max=backoff_max,
            now=now,
            retryable=exit.retryable,
        )
        changes = Changes()
        extra: dict[str, object] = {"exit_code": exit.exit_code, "error": exit.error}
        if outcome.run_at is not None:
            extra["run_at"] = outcome.run_at
            changes.reordered = True  # its retry may outrank what was read ahead
        self.transitions.move(claimed.id, state, outcome.event, now, changes, **extra)
        return Written(outcome.state, changes)

    def finish_many(
        self, ends: Sequence[AttemptEnd], backoff_max: float
    ) -> Written[list[JobState | Refused | None]]:
        """`finish` for each end, in order: in-process, there is no round trip to save."""
        changes = Changes()
        results: list[JobState | Refused | None] = []
        for end in ends:
            written = self.finish(
                end.claimed,
                end.exit,
                backoff_max,
                end.ended_at,
                pid=end.pid,
                stdout=end.stdout,
                stderr=end.stderr,
                log_incomplete=end.log_incomplete,
            )
            changes.merge(written.changes)
            results.append(written.value)
        return Written(results, changes)

    def recover(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        """Record the attempts a dead daemon left running as interrupted
        (lifecycle.INTERRUPTED: retried under the job's policy)."""
        left = [
            (rows.interrupted(row[:-1]), row[-1] == NOT_STARTED)
            for row in self.conn.execute(
                f"SELECT {rows.INTERRUPTED_COLUMNS}, a.pid FROM jobs j JOIN attempts a ON a.job_id = j.id"
                f" WHERE j.state = '{lifecycle.RUNNING}' AND a.attempt = (SELECT max(attempt) FROM attempts"
                " WHERE job_id = j.id) ORDER BY j.id"
            ).fetchall()
        ]
        changes = Changes()
        for job, _ in filter(lambda entry: entry[1], left):
            # Claimed and never started: it waits again, and the attempt does not count.
            changes.merge(self.unclaim(job, now).changes)
            changes.reordered = True
        left = [(job, False) for job, not_started in left if not not_started]
        recovered = []
        for job, _ in left:
            written = self.finish(job, lifecycle.INTERRUPTED, backoff_max, now)
            changes.merge(written.changes)
            recovered.append(Recovered(job.id, job.run, written.value))
        return Written(recovered, changes)
