"""Jobs as rows in SQLite: what differs from queued/store/job_table.py (which
has the reads and deletes of both engines) is storing new ones, with one
executemany per run of them, and looking up a unique key's holder, under the
one writer's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from queued import lifecycle
from queued.lifecycle import JobState
from queued.store.contract import AddedIds, Written
from queued.store.environments import Environments, stored_path
from queued.store.job_table import JobTable, unknown_queue, unmet_dependencies
from queued.store.sqlite import rows
from queued.store.sqlite.dialect import SQLITE
from queued.store.sqlite.rows import UNIQUE, UNIQUE_WINDOW
from queued.validation import NewJob


class UniqueKeys:
    """Unique keys in SQLite: one writer, so a look and the add after it are
    one step without a lock (PostgreSQL's, with its advisory locks: unique.py)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def lock(self, keys: Iterable[str]) -> None:
        """One writer: nothing comes between a look and an add."""

    def holder(self, key: str, window_start: float | None) -> tuple[int, JobState] | None:
        """The job an add of `key` returns (`lifecycle.holds_key`): the unfinished
        one, else, with a window, the one that completed last within it."""
        row = self.conn.execute(
            f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({UNIQUE})", (key,)
        ).fetchone()
        if row is None and window_start is not None:
            row = self.conn.execute(
                f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN ({UNIQUE_WINDOW})"
                " AND updated_at > ? ORDER BY updated_at DESC, id DESC LIMIT 1",
                (key, window_start),
            ).fetchone()
        return row


class Jobs(JobTable):
    def __init__(self, conn: sqlite3.Connection, environments: Environments) -> None:
        super().__init__(conn, SQLITE, environments, UniqueKeys(conn))
        self.conn: sqlite3.Connection = conn

    def add(self, jobs: Sequence[NewJob], now: float) -> Written[AddedIds]:
        """Store new jobs; their ids, in order. Jobs without dependencies go in
        with one executemany per run of them: a bulk add is a bulk insert. A
        unique key is looked up and inserted under the one writer's
        transaction, so nothing comes between (the partial unique index
        jobs_unique would refuse a second unfinished job of the key anyway)."""
        queues = {row[0] for row in self.conn.execute("SELECT name FROM queues")}
        ids = AddedIds()
        env_ids: dict[int, int] = {}  # id(env) -> row: the jobs of one request share their env
        added: dict[tuple[str, str], int] = {}  # (queue, state) -> jobs, for the counts table
        plain: list[tuple] = []  # rows waiting for one executemany

        def flush() -> None:
            if plain:
                self.conn.executemany(rows.INSERT_JOB, plain)
                # One writer inside one transaction: AUTOINCREMENT ids are consecutive.
                last = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()[0]
                ids.extend(range(last - len(plain) + 1, last + 1))
                ids.existing.extend([False] * len(plain))
                plain.clear()

        for job in jobs:
            if job.queue not in queues:
                raise unknown_queue(job.queue)
            if job.unique_key is not None:
                flush()  # the key may be one of this request's
                window_start = lifecycle.unique_window_start(now, job.unique_for)
                holder = self.unique.holder(job.unique_key, window_start)
                if holder is not None:
                    ids.append(holder[0])
                    ids.existing.append(True)
                    continue
            env_id = env_ids.get(id(job.env))
            if env_id is None:
                env_id = env_ids[id(job.env)] = self.environments.store(job.env)
            state = lifecycle.initial_state(hold=job.hold)
            unmet = 0
            if job.depends_on:
                flush()  # a dependency may be a job of this very request
                dep_states = self.states(job.depends_on)
                unmet = unmet_dependencies(job.depends_on, dep_states)
            row = (
                job.command,
                state,
                job.queue,
                job.priority,
                job.label,
                job.max_retries,
                job.backoff_base,
                job.timeout,
                job.run_at,
                now,
                now,
                stored_path(job.cwd),
                env_id,
                unmet,
                None,
                job.unique_key,
                job.node,
                job.slots,
                rows.stored_json(job.needs) if job.needs else None,
            )
            added[(job.queue, state)] = added.get((job.queue, state), 0) + 1
            if not job.depends_on:
                plain.append(row)
                continue
            job_id = self.conn.execute(rows.INSERT_JOB, row).lastrowid
            assert job_id is not None
            self.conn.executemany(
                "INSERT INTO dependencies (job_id, depends_on) VALUES (?, ?)",
                [(job_id, dep) for dep in job.depends_on],
            )
            ids.append(job_id)
            ids.existing.append(False)
        flush()
        self.conn.executemany(
            "INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            [(queue, state, n) for (queue, state), n in added.items()],
        )
        return Written(ids)
