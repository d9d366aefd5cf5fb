"""Reads for the web page and /metrics that no socket request needs: jobs
counted by queue and state, a job's dependents, the jobs a filter matches,
and the attempts that ended after a point in time (the charts' and
histograms' history, which survives a restart because it is the stored
attempts themselves). The same on every engine: each supplies its spelling
(`store.dialect`, see queued/store/dialect.py).

Functions of a Store (its connection), so that any caller running Store
methods can run them too: the web's own read connection does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from queued.store.job_table import job_filters


class EndedAttempt(NamedTuple):
    """One attempt that ended: when, how, and how long it waited and ran."""

    ended_at: float
    job_id: int
    attempt: int
    queue: str
    outcome: str  # completed, failed (exit code or signal), error (did not run), interrupted
    waited: float | None  # seconds from the job's due time to the start (its latest attempt only)
    ran: float  # seconds from start to end


def counts_by_queue(store: Any) -> dict[tuple[str, str], int]:
    """(queue, state) -> jobs (SQLite's kept counts may hold zeros)."""
    return {
        (queue, state): n
        for queue, state, n in store.dialect.counts.by_queue(store.conn, unfinished_only=False)
    }


def dependents(store: Any, job_id: int) -> list[int]:
    """The jobs that wait for `job_id` (the other direction of depends_on)."""
    sql = store.dialect.sql("SELECT job_id FROM dependencies WHERE depends_on = ? ORDER BY job_id")
    return [row[0] for row in store.conn.execute(sql, (job_id,))]


def count_jobs(store: Any, *, cap: int = 1_000_000, **filters: Any) -> int:
    """How many jobs match the filters of Store.list_jobs (counted up to `cap`)."""
    where, args = job_filters(store.dialect, **filters)
    sql = store.dialect.sql(f"SELECT count(*) FROM (SELECT 1 FROM jobs{where} LIMIT ?) matching")
    return int(store.conn.execute(sql, [*args, cap]).fetchone()[0])


def matching_ids(store: Any, *, cap: int = 100_000, **filters: Any) -> list[int]:
    """The ids of the jobs matching the filters (the newest `cap`), for a bulk action."""
    where, args = job_filters(store.dialect, **filters)
    sql = store.dialect.sql(f"SELECT id FROM jobs{where} ORDER BY id DESC LIMIT ?")
    return sorted(row[0] for row in store.conn.execute(sql, [*args, cap]))


def attempts_ended(store: Any, after: float, until: float, limit: int = 200_000) -> list[EndedAttempt]:
    """Attempts that ended in (after, until], oldest first, at most `limit`.
    The wait is known for a job's latest attempt only (the job's run_at is
    when that one was due); earlier attempts report None."""
    return ended_attempts(
        store.conn.execute(
            store.dialect.sql(
                "SELECT a.ended_at, a.job_id, a.attempt, j.queue, a.exit_code, a.signal, a.error,"
                " a.started_at, j.run_at, j.attempts FROM attempts a JOIN jobs j ON j.id = a.job_id"
                " WHERE a.ended_at > ? AND a.ended_at <= ? ORDER BY a.ended_at LIMIT ?"
            ),
            (after, until, limit),
        )
    )


def ended_attempts(rows: Iterable[Sequence[Any]]) -> list[EndedAttempt]:
    """EndedAttempt of each row (ended_at, job_id, attempt, queue, exit_code,
    signal, error, started_at, the job's run_at, the job's attempts)."""
    found = []
    for ended_at, job_id, attempt, queue, exit_code, sig, error, started_at, run_at, attempts in rows:
        if exit_code == 0 and sig is None and error is None:
            outcome = "completed"
        elif exit_code is None and sig is None and error is not None:
            outcome = "interrupted" if "interrupt" in error else "error"
        else:
            outcome = "failed"
        waited = max(0.0, started_at - run_at) if attempt == attempts and started_at >= run_at - 1 else None
        found.append(
            EndedAttempt(ended_at, job_id, attempt, queue, outcome, waited, max(0.0, ended_at - started_at))
        )
    return found
