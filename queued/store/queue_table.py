"""Queues and the saved settings, for every engine: the statements are the
same but for placeholders, a row lock, and how jobs are counted, which the
engine supplies (queued/store/dialect.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queued import lifecycle
from queued.protocol import QueueInfo
from queued.store.contract import Refused, Written
from queued.store.dialect import Connection, Dialect
from queued.store.sqlite.rows import UNFINISHED, WAITING

DEFAULT_QUEUE = "default"


class QueueTable:
    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self.counts = dialect.counts

    def _execute(self, text: str, params: tuple = ()) -> Any:
        return self.conn.execute(self.dialect.sql(text), params)

    def queues(self) -> list[QueueInfo]:
        counts: dict[tuple[str, str], int] = {
            (q, s): n for q, s, n in self.counts.by_queue(self.conn, unfinished_only=True)
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
            for name, conc, paused in self._execute(
                "SELECT name, concurrency, paused FROM queues ORDER BY name"
            )
        ]

    def waits_here(self, node: str, queues: Sequence[str] | None) -> bool:
        """Store.waits_here for node `node`."""
        served = "" if queues is None else f" AND j.queue IN ({', '.join('?' * len(queues))})"
        row = self._execute(
            "SELECT EXISTS (SELECT 1 FROM jobs j JOIN queues q ON q.name = j.queue"
            f" WHERE j.state IN ({WAITING}) AND NOT q.paused AND (j.node IS NULL OR j.node = ?){served})",
            (node, *(queues or ())),
        ).fetchone()
        return bool(row[0])

    def ensure_default(self, now: float) -> None:
        self._execute(
            "INSERT INTO queues (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (DEFAULT_QUEUE, now)
        )

    def add_queue(self, name: str, concurrency: int | None, now: float) -> Written[None]:
        if self._execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} already exists")
        self._execute(
            "INSERT INTO queues (name, concurrency, created_at) VALUES (?, ?, ?)", (name, concurrency, now)
        )
        return Written(None)

    def remove_queue(self, name: str) -> Written[None]:
        if name == DEFAULT_QUEUE:
            raise Refused("invalid", "the default queue cannot be removed")
        # A row lock (PostgreSQL) waits for the adds and edits that locked the
        # queue to commit, so that the jobs they put in it are seen below
        # (postgres/schema.py, JOB_KEYS_CHECKED_ONCE); SQLite has one writer.
        self._require_queue(name, self.dialect.lock)
        busy = self._execute(
            f"SELECT count(*) FROM jobs WHERE queue = ? AND state IN ({UNFINISHED})", (name,)
        ).fetchone()[0]
        if busy:
            raise Refused("invalid", f"queue {name!r} still has {busy} unfinished job(s)")
        if self._execute("SELECT 1 FROM jobs WHERE queue = ? LIMIT 1", (name,)).fetchone():
            raise Refused("invalid", f"queue {name!r} still holds finished jobs: `queuectl clean` them first")
        self.counts.queue_removed(self.conn, name)
        self._execute("DELETE FROM queues WHERE name = ?", (name,))
        return Written(None)

    def set_paused(self, name: str, paused: bool) -> Written[None]:
        self._require_queue(name)
        self._execute("UPDATE queues SET paused = ? WHERE name = ?", (paused, name))
        return Written(None)

    def set_queue_concurrency(self, name: str, concurrency: int | None) -> Written[None]:
        if concurrency is not None and concurrency < 1:
            raise Refused("invalid", "a queue's concurrency is at least 1 (pause the queue to start none)")
        self._require_queue(name)
        self._execute("UPDATE queues SET concurrency = ? WHERE name = ?", (concurrency, name))
        return Written(None)

    def set_all_paused(self, paused: bool) -> Written[None]:
        self._execute("UPDATE queues SET paused = ?", (paused,))
        return Written(None)

    def _require_queue(self, name: str, lock: str = "") -> None:
        if not self._execute(f"SELECT 1 FROM queues WHERE name = ?{lock}", (name,)).fetchone():
            raise Refused("not_found", f"no queue {name!r}")

    def counts_by_state(self) -> dict[str, int]:
        return self.counts.totals(self.conn)

    def config(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM config"))

    def set_config(self, key: str, value: str) -> Written[None]:
        self._execute(
            "INSERT INTO config (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        return Written(None)
