"""The SQLite engine: the store contract over one connection, composed of
parts that each keep one table's rules (jobs, user changes, attempts, queues),
and the writer's transactions (one BEGIN IMMEDIATE ... COMMIT per batch, a
savepoint per guarded call).

Only ever called from the writer's thread (see `queued/store/writer.py`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from queued.lease import default_node_name
from queued.protocol import NodeInfo
from queued.store.composed import ComposedStore
from queued.store.contract import (
    BatchLost,
    NodeIdentity,
    OutputChunk,
    OutputStream,
    Recovered,
    Refused,
    StorageError,
    StoreLost,
    Written,
)
from queued.store.sqlite import schema
from queued.store.sqlite.attempts import Attempts
from queued.store.sqlite.dialect import SQLITE
from queued.store.sqlite.jobs import Jobs
from queued.store.sqlite.transitions import SqliteTransitionSql
from queued.store.transitions import Transitions

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTPUT_IN_FILES = "this store keeps no output: an attempt's output is in the log files its row names"


class SqliteStore(ComposedStore):
    """The store contract (`queued.store.Store`) and the writer's transactions
    (`queued.store.contract.Transactions`) on one SQLite connection."""

    # One host: attempts' output is in the log files its attempt rows name,
    # written by the supervisor, not in the database.
    keeps_output = False
    claims_before_start = False  # only this daemon uses the file: it reads ahead
    answer_bound = None  # a file of our own: nothing to wait on but the disk
    busy_since = None
    dialect = SQLITE  # its spelling of the shared statements (queued/store/reports.py reads it)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._node = NodeIdentity(default_node_name(), "")
        self._compose_parts(conn, SQLITE, Transitions(SqliteTransitionSql(conn)), Jobs, Attempts)
        self._files = schema.FileWatch(conn)
        self._changes_at_begin = 0

    @classmethod
    def open(cls, path: Path) -> SqliteStore:
        """The store in the database file `path` (created if missing);
        schema.DatabaseUnusable names the file when it cannot be used."""
        return cls(schema.connect(path))

    def news(self) -> None:
        """No other node shares the file: no news to hear."""
        return None

    # -- attempts' output ----------------------------------------------------------

    def append_output(self, chunks: Sequence[OutputChunk]) -> Written[None]:
        raise Refused("invalid", OUTPUT_IN_FILES)

    def read_output(
        self, job_id: int, attempt: int, stream: OutputStream, offset: int, limit: int
    ) -> tuple[bytes, int]:
        raise Refused("invalid", OUTPUT_IN_FILES)

    # -- nodes: one, this daemon (the data dir's lock keeps it alone) -----------

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(name=self._node.name, slots=0, running=0, this=True)]

    def rescue(self, backoff_max: float, now: float) -> Written[list[Recovered]]:
        return Written([])

    # -- the writer's transactions ----------------------------------------------

    def begin(self) -> None:
        self._changes_at_begin = self.conn.total_changes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc

    def call(
        self, method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, guarded: bool
    ) -> T:
        if not guarded:
            # Refuses before it writes (see the contract); an error after a
            # write cannot be undone alone: the batch fails.
            try:
                return method(*args, **kwargs)
            except Refused:
                raise
            except sqlite3.Error as exc:
                raise BatchLost(StorageError(describe(exc))) from exc
            except Exception as exc:
                log.exception("store call %s failed", getattr(method, "__name__", method))
                raise BatchLost(StorageError(f"database error: internal error: {exc}")) from exc
        conn = self.conn
        try:
            conn.execute("SAVEPOINT call")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            self._undo_call(exc)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(describe(exc)) from exc
            raise
        conn.execute("RELEASE call")
        return result

    def _undo_call(self, exc: BaseException) -> None:
        """Roll back one guarded call; BatchLost if SQLite already rolled back
        the whole transaction (SQLITE_FULL, an I/O error): the calls before it
        lost their writes too."""
        conn = self.conn
        if not conn.in_transaction:
            error = (
                describe(exc) if isinstance(exc, sqlite3.Error) else f"database error: internal error: {exc}"
            )
            raise BatchLost(StorageError(error)) from exc
        try:
            conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
        except sqlite3.Error as undo:
            raise BatchLost(StorageError(describe(undo))) from exc
        self.forget_caches()

    def commit(self) -> None:
        """Before a commit that writes: the database file and its WAL must still
        be the ones the connection has open. Deleted or replaced under us, a
        commit would go into a file nobody will ever read again."""
        try:
            if self.conn.total_changes != self._changes_at_begin:
                reason = self._files.lost()
                if reason is not None:
                    raise StoreLost(
                        StorageError(
                            f"{reason} while queued was running: it refuses every change; restart queued"
                        )
                    )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BatchLost(StorageError(describe(exc))) from exc

    def abort(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        self.forget_caches()

    def reconnect(self) -> None:
        """A file is never unreachable (a lost one is StoreLost): nothing to do."""

    def answers(self) -> bool:
        """Never called (no `answer_bound`)."""
        return True

    def interrupt(self) -> None:
        """Never called (no `answer_bound`)."""

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            log.warning("final checkpoint not done (%s): the next start replays the WAL", exc)
        try:
            self.conn.close()
        except Exception as exc:
            log.warning("database not closed cleanly (%s): the next start replays the WAL", exc)


def describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return "the database disk is full; free some space and try again"
    return f"database error: {text}"
