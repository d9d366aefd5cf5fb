"""What differs between the engines in the statements written once for both.

The modules that hold a rule or a query for every engine
(queued/store/reports.py, queue_table.py, environments.py, job_table.py,
job_changes.py, schedule_table.py) write their SQL with `?` placeholders and ask a Dialect
for the rest: its placeholder, how a list of values is matched (SQLite binds
one placeholder per value, in chunks under its variable limit; PostgreSQL
binds one array), row locks, how a cwd and a job's needs are stored, and how
jobs are counted by queue and state. Each engine makes one
(queued/store/sqlite/dialect.py, queued/store/postgres/dialect.py).

What differs in shape rather than in spelling stays in the engine's own
modules: the adds (SQLite's executemany and lastrowid, PostgreSQL's taken ids
and COPY), the claims (SKIP LOCKED, advisory locks), the cascade's
statements, nodes and their leases.

Nothing here imports an engine: a shared module may be the first one loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

# Values bound one by one in a statement: under SQLite's oldest limit (999).
PER_STATEMENT = 900


class Connection(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...


class JobCounts(Protocol):
    """How an engine counts jobs by queue and state. SQLite keeps a table of
    counts by trigger; PostgreSQL counts unfinished jobs with GROUP BY (a
    counts row per queue would serialize every node's claims) and keeps the
    finished ones apart, sharded (postgres/schema.py, FINISHED_COUNTS)."""

    def by_queue(self, conn: Connection, *, unfinished_only: bool) -> Iterable[tuple[str, str, int]]:
        """(queue, state, jobs), at least for every unfinished state; every
        state unless `unfinished_only` (which an engine may ignore)."""
        ...

    def totals(self, conn: Connection) -> dict[str, int]:
        """Jobs in each of lifecycle.STATES."""
        ...

    def queue_removed(self, conn: Connection, name: str) -> None:
        """Forget the counts of queue `name`, which holds no job any more."""
        ...

    def job_moved(self, conn: Connection, state: str, old_queue: str, new_queue: str) -> None:
        """A job in `state` moved between queues (an edit): counts kept by
        trigger follow state changes only."""
        ...


class Dialect:
    """An engine's spelling of the shared statements."""

    def __init__(
        self,
        *,
        mark: str,
        arrays: bool,
        find: str,
        lock: str,
        key_share: str,
        share: str,
        path_in: Callable[[str | bytes], Any],
        path_out: Callable[[Any], str | bytes] | None,
        json_in: Callable[[Any], Any],
        counts: JobCounts,
        latest_attempts: str,
    ) -> None:
        self.mark = mark  # "?" or "%s"
        self.arrays = arrays  # a list of values binds as one array parameter
        self.find = find  # the function finding text in text (position, 0 when absent)
        self.lock = lock  # " FOR UPDATE" where rows can be locked
        self.key_share = key_share  # " FOR KEY SHARE": what a foreign key check takes, where rows lock
        # " FOR SHARE OF {}": rows of that table held from changes until commit, where rows lock
        self.share = share
        self.path_in = path_in  # a cwd as its column takes it
        # A stored cwd back as a Job's (str if UTF-8, else bytes); None: the
        # driver gives it so already, and no row is touched to read it.
        self.path_out = path_out
        self.json_in = json_in  # a job's needs as the column takes them (None: none)
        self.counts = counts
        # (job_id, started_at, ended_at, node, gpus) of the latest attempt of
        # each job matching {jobs} (a condition on a.job_id).
        self.latest_attempts = latest_attempts

    def sql(self, text: str) -> str:
        """`text`, written with `?` placeholders, in this engine's."""
        return text if self.mark == "?" else text.replace("?", self.mark)

    def read_path(self, stored: Any) -> str | bytes:
        return stored if self.path_out is None else self.path_out(stored)

    def one_of(self, column: str, values: Sequence[Any], kind: str) -> tuple[str, list[Any]]:
        """The condition that `column` is one of `values` (of SQL type `kind`,
        for an array) and its parameters: `values` must not be empty."""
        if self.arrays:
            return f"{column} = ANY({self.mark}::{kind}[])", [list(values)]
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def batches(self, ids: Iterable[int]) -> list[list[int]]:
        """`ids` in as few lists as one statement each can take: one array,
        or pieces under SQLite's limit on bound parameters; none for no ids."""
        ids = list(ids)
        if self.arrays:
            return [ids] if ids else []
        return [ids[start : start + PER_STATEMENT] for start in range(0, len(ids), PER_STATEMENT)]
