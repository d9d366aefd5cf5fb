"""PostgreSQL's spelling of the statements the engines share (see
queued/store/dialect.py), and its counts of jobs: unfinished ones counted with
GROUP BY over the jobs table (no counts kept by trigger for them, whose hot
rows would serialize every node's claims); finished ones kept apart, sharded
(schema.FINISHED_COUNTS)."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import Connection
from psycopg.types.json import Jsonb

from queued import lifecycle
from queued.store.dialect import Dialect
from queued.store.environments import stored_path
from queued.store.sqlite.rows import UNFINISHED


def path_bytes(path: str | bytes) -> bytes:
    """A cwd as stored: its bytes (a path need not be UTF-8)."""
    stored = stored_path(path)
    return stored if isinstance(stored, bytes) else stored.encode()


def path_read(data: bytes) -> str | bytes:
    """A stored cwd as the SQLite engine gives it: str if UTF-8, else bytes."""
    data = bytes(data)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


class PostgresCounts:
    def by_queue(self, conn: Connection, *, unfinished_only: bool) -> Iterable[tuple[str, str, int]]:
        # Unfinished jobs are few and indexed by state (jobs_by_state); all of
        # them (the web's /metrics, once per scrape) is a scan.
        where = f" WHERE state IN ({UNFINISHED})" if unfinished_only else ""
        return conn.execute(f"SELECT queue, state, count(*) FROM jobs{where} GROUP BY queue, state")

    def totals(self, conn: Connection) -> dict[str, int]:
        """Unfinished jobs counted (few, through jobs_by_state), finished ones
        read from the table their transitions keep (see schema.FINISHED_COUNTS)."""
        totals = dict.fromkeys(lifecycle.STATES, 0)
        for state, n in conn.execute(
            f"SELECT state, count(*) FROM jobs WHERE state IN ({UNFINISHED}) GROUP BY state"
        ):
            totals[state] = n
        sums = ", ".join(f"coalesce(sum({state}), 0)" for state in lifecycle.TERMINAL_STATES)
        row = conn.execute(f"SELECT {sums} FROM finished_counts").fetchone()
        totals.update(zip(lifecycle.TERMINAL_STATES, map(int, row), strict=True))
        return totals

    def queue_removed(self, conn: Connection, name: str) -> None:
        """Nothing is kept per queue."""

    def job_moved(self, conn: Connection, state: str, old_queue: str, new_queue: str) -> None:
        """Nothing is kept per queue."""


POSTGRES = Dialect(
    mark="%s",
    arrays=True,
    find="strpos",
    lock=" FOR UPDATE",
    key_share=" FOR KEY SHARE",
    share=" FOR SHARE OF {}",
    path_in=path_bytes,
    path_out=path_read,
    json_in=Jsonb,
    counts=PostgresCounts(),
    latest_attempts="SELECT DISTINCT ON (a.job_id) a.job_id, a.started_at, a.ended_at, a.node, a.gpus"
    " FROM attempts a WHERE {jobs} ORDER BY a.job_id, a.attempt DESC",
)
