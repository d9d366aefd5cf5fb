"""Queues and the saved settings (PostgreSQL). Unfinished jobs are counted
with GROUP BY over the jobs table: no counts table kept by trigger for them,
whose hot rows would serialize every node's claims; finished ones are kept
apart, sharded (schema.FINISHED_COUNTS)."""

from __future__ import annotations

from psycopg import Connection

from queued import lifecycle
from queued.protocol import QueueInfo
from queued.store.contract import Refused, Written
from queued.store.sqlite.rows import UNFINISHED

DEFAULT_QUEUE = "default"


class Queues:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def queues(self) -> list[QueueInfo]:
        counts: dict[tuple[str, str], int] = {
            (q, s): n
            for q, s, n in self.conn.execute(
                f"SELECT queue, state, count(*) FROM jobs WHERE state IN ({UNFINISHED}) GROUP BY queue, state"
            )
        }
        return [
            QueueInfo(
                name=name,
                concurrency=conc,
                paused=bool(paused),
                running=counts.get((name, lifecycle.RUNNING), 0),
                pending=counts.get((name, lifecycle.PENDING), 0),
                held=counts.get((name, lifecycle.HELD), 0),
                failed=counts.get((name, lifecycle.FAILED), 0),
            )
            for name, conc, paused in self.conn.execute(
                "SELECT name, concurrency, paused FROM queues ORDER BY name"
            )
        ]

    def ensure_default(self, now: float) -> None:
        self.conn.execute(
            "INSERT INTO queues (name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (DEFAULT_QUEUE, now),
        )

    def add_queue(self, name: str, concurrency: int | None, now: float) -> Written[None]:
        if self.conn.execute("SELECT 1 FROM queues WHERE name = %s", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} already exists")
        self.conn.execute(
            "INSERT INTO queues (name, concurrency, created_at) VALUES (%s, %s, %s)", (name, concurrency, now)
        )
        return Written(None)

    def remove_queue(self, name: str) -> Written[None]:
        if name == DEFAULT_QUEUE:
            raise Refused("invalid", "the default queue cannot be removed")
        # FOR UPDATE waits for the adds and edits that locked it to commit, so
        # that the jobs they put in it are seen below (schema.JOB_KEYS_CHECKED_ONCE).
        if not self.conn.execute("SELECT 1 FROM queues WHERE name = %s FOR UPDATE", (name,)).fetchone():
            raise Refused("not_found", f"no queue {name!r}")
        busy = self.conn.execute(
            f"SELECT count(*) FROM jobs WHERE queue = %s AND state IN ({UNFINISHED})", (name,)
        ).fetchone()[0]
        if busy:
            raise Refused("invalid", f"queue {name!r} still has {busy} unfinished job(s)")
        if self.conn.execute("SELECT 1 FROM jobs WHERE queue = %s LIMIT 1", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} still holds finished jobs: `queuectl clean` them first")
        self.conn.execute("DELETE FROM queues WHERE name = %s", (name,))
        return Written(None)

    def set_paused(self, name: str, paused: bool) -> Written[None]:
        self._require_queue(name)
        self.conn.execute("UPDATE queues SET paused = %s WHERE name = %s", (paused, name))
        return Written(None)

    def set_queue_concurrency(self, name: str, concurrency: int | None) -> Written[None]:
        if concurrency is not None and concurrency < 1:
            raise Refused("invalid", "a queue's concurrency is at least 1 (pause the queue to start none)")
        self._require_queue(name)
        self.conn.execute("UPDATE queues SET concurrency = %s WHERE name = %s", (concurrency, name))
        return Written(None)

    def set_all_paused(self, paused: bool) -> Written[None]:
        self.conn.execute("UPDATE queues SET paused = %s", (paused,))
        return Written(None)

    def _require_queue(self, name: str) -> None:
        if not self.conn.execute("SELECT 1 FROM queues WHERE name = %s", (name,)).fetchone():
            raise Refused("not_found", f"no queue {name!r}")

    def counts(self) -> dict[str, int]:
        """Unfinished jobs counted (few, through jobs_by_state), finished ones
        read from the table their transitions keep (see schema.FINISHED_COUNTS)."""
        totals = dict.fromkeys(lifecycle.STATES, 0)
        for state, n in self.conn.execute(
            f"SELECT state, count(*) FROM jobs WHERE state IN ({UNFINISHED}) GROUP BY state"
        ):
            totals[state] = n
        sums = ", ".join(f"coalesce(sum({state}), 0)" for state in lifecycle.TERMINAL_STATES)
        row = self.conn.execute(f"SELECT {sums} FROM finished_counts").fetchone()
        totals.update(zip(lifecycle.TERMINAL_STATES, map(int, row), strict=True))
        return totals

    def config(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM config"))

    def set_config(self, key: str, value: str) -> Written[None]:
        self.conn.execute(
            "INSERT INTO config (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        return Written(None)
