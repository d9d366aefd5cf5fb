"""The web page's reads that no socket request needs, on PostgreSQL: the
same functions as queued/store/sqlite/reports.py (see there), over this
engine's tables. Jobs are counted by queue and state with GROUP BY: finished
ones are kept counted only in total (schema.FINISHED_COUNTS), so /metrics
scans them, once per scrape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queued.store.sqlite.reports import EndedAttempt, ended_attempts


def counts_by_queue(store: Any) -> dict[tuple[str, str], int]:
    """(queue, state) -> jobs."""
    return {
        (queue, state): n
        for queue, state, n in store.conn.execute(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
        )
    }


def dependents(store: Any, job_id: int) -> list[int]:
    """The jobs that wait for `job_id` (the other direction of depends_on)."""
    return [
        row[0]
        for row in store.conn.execute(
            "SELECT job_id FROM dependencies WHERE depends_on = %s ORDER BY job_id", (job_id,)
        )
    ]


def count_jobs(
    store: Any,
    *,
    states: Sequence[str] = (),
    queue: str | None = None,
    label: str | None = None,
    command: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    cap: int = 1_000_000,
) -> int:
    """How many jobs match the filters of Store.list_jobs (counted up to `cap`)."""
    where, args = _filters(states, queue, label, command, created_after, created_before)
    sql = "SELECT count(*) FROM (SELECT 1 FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return int(store.conn.execute(sql + " LIMIT %s) matching", [*args, cap]).fetchone()[0])


def matching_ids(
    store: Any,
    *,
    states: Sequence[str] = (),
    queue: str | None = None,
    label: str | None = None,
    command: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    cap: int = 100_000,
) -> list[int]:
    """The ids of the jobs matching the filters (the newest `cap`), for a bulk action."""
    where, args = _filters(states, queue, label, command, created_after, created_before)
    sql = "SELECT id FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return sorted(row[0] for row in store.conn.execute(sql + " ORDER BY id DESC LIMIT %s", [*args, cap]))


def _filters(
    states: Sequence[str],
    queue: str | None,
    label: str | None,
    command: str | None,
    created_after: float | None,
    created_before: float | None,
) -> tuple[list[str], list[object]]:
    where: list[str] = []
    args: list[object] = []
    if states:
        where.append("state = ANY(%s::text[])")
        args.append(list(states))
    for clause, value in (
        ("queue = %s", queue),
        ("label = %s", label),
        ("strpos(command, %s) > 0", command),
        ("created_at >= %s", created_after),
        ("created_at < %s", created_before),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    return where, args


def attempts_ended(store: Any, after: float, until: float, limit: int = 200_000) -> list[EndedAttempt]:
    """Attempts that ended in (after, until], oldest first, at most `limit`
    (see the SQLite engine's)."""
    return ended_attempts(
        store.conn.execute(
            "SELECT a.ended_at, a.job_id, a.attempt, j.queue, a.exit_code, a.signal, a.error, a.started_at,"
            " j.run_at, j.attempts FROM attempts a JOIN jobs j ON j.id = a.job_id"
            " WHERE a.ended_at > %s AND a.ended_at <= %s ORDER BY a.ended_at LIMIT %s",
            (after, until, limit),
        )
    )
