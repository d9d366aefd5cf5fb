"""SQLite's spelling of the statements the engines share (see
queued/store/dialect.py), and its counts of jobs: a table kept by trigger,
one row per queue and state, so that a count is a read of a few rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from queued import lifecycle
from queued.store.dialect import Dialect
from queued.store.environments import stored_path
from queued.store.sqlite.rows import stored_json


class SqliteCounts:
    """The counts table: kept by the triggers on jobs' states (schema.py)."""

    def by_queue(self, conn: sqlite3.Connection, *, unfinished_only: bool) -> Iterable[tuple[str, str, int]]:
        # A row per queue and state at most: no need to leave the finished out.
        return conn.execute("SELECT queue, state, n FROM counts")

    def totals(self, conn: sqlite3.Connection) -> dict[str, int]:
        totals = dict.fromkeys(lifecycle.STATES, 0)
        for state, n in conn.execute("SELECT state, sum(n) FROM counts GROUP BY state"):
            totals[state] = n
        return totals

    def queue_removed(self, conn: sqlite3.Connection, name: str) -> None:
        conn.execute("DELETE FROM counts WHERE queue = ?", (name,))

    def job_moved(self, conn: sqlite3.Connection, state: str, old_queue: str, new_queue: str) -> None:
        # The triggers follow state changes; a move between queues is ours.
        conn.execute("UPDATE counts SET n = n - 1 WHERE queue = ? AND state = ?", (old_queue, state))
        conn.execute(
            "INSERT INTO counts VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (new_queue, state)
        )


SQLITE = Dialect(
    mark="?",
    arrays=False,
    find="instr",
    lock="",  # one writer: nothing to lock against
    key_share="",
    share="",
    path_in=stored_path,
    path_out=None,  # a cwd's column holds text, or a BLOB for one not UTF-8: read back as is
    json_in=stored_json,
    counts=SqliteCounts(),
    latest_attempts="SELECT a.job_id, a.started_at, a.ended_at, a.node, a.gpus FROM attempts a"
    " WHERE {jobs} AND a.attempt = (SELECT max(attempt) FROM attempts WHERE job_id = a.job_id)",
)
